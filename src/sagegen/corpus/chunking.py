"""Split long documents into overlapping passages of about ``chunk_words`` words.

Passages keep the document title and get ids ``<docid>#<k>`` (k from 0); a document that fits in
one passage keeps its own id, so gold ids of benchmark corpora stay valid. Cuts prefer sentence
ends: a window is shortened to the last sentence boundary in its second half when there is one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sagegen.errors import ConfigError
from sagegen.records import Doc

_SENTENCE_END = (".", "!", "?", '."', '!"', '?"', ".)", ".”")


def _windows(words: list[str], size: int, overlap: int) -> Iterator[tuple[int, int]]:
    n = len(words)
    start = 0
    while True:
        end = min(start + size, n)
        if end < n:
            # Snap back to a sentence end, but never below half a window so passages stay full.
            for e in range(end, start + size // 2, -1):
                if words[e - 1].endswith(_SENTENCE_END):
                    end = e
                    break
        yield start, end
        if end >= n:
            return
        start = end - overlap if end - overlap > start else end


def chunk_doc(doc: Doc, chunk_words: int, overlap: int = 0) -> list[Doc]:
    """The passages of one document (the document itself when it is short enough)."""
    if chunk_words <= 0:
        return [doc]
    if overlap >= chunk_words:
        raise ConfigError(
            f"corpus.chunk_overlap ({overlap}) must be smaller than corpus.chunk_words ({chunk_words})"
        )
    words = doc.text.split()
    if len(words) <= chunk_words:
        return [doc]
    return [
        Doc(id=f"{doc.id}#{k}", title=doc.title, text=" ".join(words[s:e]))
        for k, (s, e) in enumerate(_windows(words, chunk_words, overlap))
    ]


def chunk_docs(docs: Iterable[Doc], chunk_words: int, overlap: int = 0) -> Iterator[Doc]:
    for doc in docs:
        yield from chunk_doc(doc, chunk_words, overlap)
