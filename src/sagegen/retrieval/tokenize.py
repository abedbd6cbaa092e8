"""The one tokenizer BM25 uses for both documents and queries: lowercase, words, stopwords, stemming.

Stemming is memoised per distinct surface word, so tokenizing a corpus costs one dict lookup per
word once the vocabulary has been seen; that is what makes 100k-passage builds take seconds.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

from sagegen.errors import ConfigError

#: Runs of Unicode word characters (bm25s' default pattern without its redundant ``\b``s, ~30% faster);
#: apostrophes split words: "don't" -> "don", "t".
TOKEN_PATTERN = r"\w+"

_STOPWORD_LISTS = {
    "en": "STOPWORDS_EN",
    "en_plus": "STOPWORDS_EN_PLUS",
    "english": "STOPWORDS_EN",
    "de": "STOPWORDS_GERMAN",
    "fr": "STOPWORDS_FRENCH",
    "es": "STOPWORDS_SPANISH",
    "it": "STOPWORDS_ITALIAN",
    "pt": "STOPWORDS_PORTUGUESE",
    "nl": "STOPWORDS_DUTCH",
}


def _stopwords(name: str | None) -> frozenset[str]:
    if not name:
        return frozenset()
    import bm25s.stopwords as sw

    attr = _STOPWORD_LISTS.get(name.lower())
    if attr is None or not hasattr(sw, attr):
        raise ConfigError(
            f"retrieval.bm25.stopwords: unknown stopword list {name!r} (known: {sorted(_STOPWORD_LISTS)})"
        )
    return frozenset(getattr(sw, attr))


class Tokenizer:
    """Maps text to stemmed tokens; ``spec()`` goes into index manifests so queries match the index."""

    #: Distinct surface words memoised before the memo starts over (~150 MB at most): a large
    #: corpus' vocabulary keeps growing (numbers, names; wiki-18 has millions of distinct words), and a
    #: streaming build must not grow with it. Frequent words are back in the new memo within a few passages.
    MAX_CACHED = 1_000_000

    def __init__(self, stopwords: str | None = "en", stemmer: str | None = "english") -> None:
        self.stopwords_name, self.stemmer_name = stopwords, stemmer
        self._stop = _stopwords(stopwords)
        self._pattern = re.compile(TOKEN_PATTERN)
        self._stem_fn: Any = None
        if stemmer:
            import Stemmer  # PyStemmer

            try:
                self._stem_fn = Stemmer.Stemmer(stemmer).stemWord
            except KeyError:
                raise ConfigError(
                    f"retrieval.bm25.stemmer: unknown language {stemmer!r} "
                    f"(PyStemmer knows {', '.join(Stemmer.algorithms())})"
                ) from None
        # surface word -> stem, or None for a stopword
        self._cache: dict[str, str | None] = {}
        # A PyStemmer object keeps its working buffer between calls, so two threads must not stem
        # at once; only cache misses take the lock (dict reads and writes are atomic under the GIL).
        self._stem_lock = threading.Lock()

    def spec(self) -> dict[str, Any]:
        return {
            "pattern": TOKEN_PATTERN,
            "lowercase": True,
            "stopwords": self.stopwords_name,
            "stemmer": self.stemmer_name,
        }

    def _norm(self, word: str) -> str | None:
        if len(self._cache) >= self.MAX_CACHED:
            # A new dict, not clear(): a thread tokenizing meanwhile keeps reading the one it holds.
            self._cache = {}
        if word in self._stop:
            out = None
        elif self._stem_fn is None:
            out = word
        else:
            with self._stem_lock:
                out = self._stem_fn(word)
        self._cache[word] = out
        return out

    def words(self, text: str) -> list[str]:
        """Lowercased surface words, before stopwords and stemming."""
        return self._pattern.findall(text.lower())

    def norm(self, word: str) -> str | None:
        """The token of one surface word (``None`` for a stopword), memoised."""
        cache = self._cache
        return cache[word] if word in cache else self._norm(word)

    def __call__(self, text: str) -> list[str]:
        words = self._pattern.findall(text.lower())
        cache = self._cache
        try:
            toks = [cache[w] for w in words]  # the common case once the vocabulary has been seen
        except KeyError:
            toks = [cache[w] if w in cache else self._norm(w) for w in words]
        return [t for t in toks if t is not None]

    def many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self(t) for t in texts]
