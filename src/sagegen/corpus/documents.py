"""PDF, HTML and DOCX files of a corpus folder → passages with page or section anchors.

Libraries (the ``documents`` extra; docs/corpora.md compares them): ``pypdf`` (BSD, pure
Python) for PDF text per page, ``python-docx`` (MIT) for Word paragraphs with their heading styles,
``beautifulsoup4`` (MIT) on the standard library's HTML parser for HTML blocks and headings.

Passage ids keep where the text came from: ``report.pdf#p3-2`` is the second passage of page 3;
``page.html#s2-1`` / ``memo.docx#s2-1`` the first passage of section 2 (a section starts at each
heading; text before the first heading is section 0). A page or section is cut into passages of
about :data:`PASSAGE_WORDS` words at sentence ends (the corpus chunker's windows). Titles: the
document's own title (PDF metadata, ``<title>``, DOCX core properties), else its first heading,
else the file name; a section's heading is added after a colon.

A file that cannot be read raises :class:`Unreadable`; the folder loader reports it by name and
goes on with the next file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sagegen.corpus.chunking import _windows
from sagegen.records import Doc

#: Words per passage within a page or section (the corpus' ``chunk_words`` may cut further).
PASSAGE_WORDS = 200


class Unreadable(Exception):
    """A document file that could not be read (the reason is the message)."""


@dataclass
class Parsed:
    title: str
    #: (anchor, heading, text): anchor ``p3`` for a PDF page, ``s2`` for a section.
    parts: list[tuple[str, str, str]] = field(default_factory=list)


def _need(module: str, package: str) -> None:
    raise Unreadable(f"reading this format needs {package}: pip install 'sagegen[documents]'") from None


def read_pdf(path: Path) -> Parsed:
    try:
        from pypdf import PdfReader
    except ImportError:
        _need("pypdf", "pypdf")
    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("encrypted PDF")
        meta = reader.metadata
        title = (meta.title or "").strip() if meta is not None else ""
        parts = [(f"p{n}", "", page.extract_text() or "") for n, page in enumerate(reader.pages, 1)]
    except Unreadable:
        raise
    except Exception as e:  # pypdf raises many types (PdfReadError, ValueError, KeyError...) on bad files
        raise Unreadable(f"not a readable PDF ({type(e).__name__}: {e})") from None
    if not any(t.strip() for _, _, t in parts):
        raise Unreadable("no extractable text (a scanned PDF needs OCR first)")
    return Parsed(title, parts)


_HEADINGS = ("h1", "h2", "h3", "h4")
_BLOCKS = ("p", "li", "pre", "blockquote", "td", "th", "dd", "dt", "figcaption", *_HEADINGS)


def read_html(path: Path) -> Parsed:
    try:
        from bs4 import BeautifulSoup
    except ImportError:
        _need("bs4", "beautifulsoup4")
    try:
        raw = path.read_bytes()
        soup = BeautifulSoup(raw, "html.parser")
    except Exception as e:
        raise Unreadable(f"not readable HTML ({type(e).__name__}: {e})") from None
    for tag in soup(["script", "style", "noscript", "nav", "header", "footer", "template", "svg"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for el in soup.find_all(_BLOCKS):
        if el.find_parent(_BLOCKS) is not None:
            continue  # nested block: its text is already in the enclosing one
        text = el.get_text(" ", strip=True)
        if not text:
            continue
        if el.name in _HEADINGS:
            sections.append((text, []))
        else:
            sections[-1][1].append(text)
    if not any(body for _, body in sections) and soup.body is not None:
        sections = [("", [soup.body.get_text(" ", strip=True)])]  # no block markup: the page's text
    return _sections(title, sections)


def read_docx(path: Path) -> Parsed:
    try:
        import docx
    except ImportError:
        _need("docx", "python-docx")
    try:
        d = docx.Document(str(path))
        title = (d.core_properties.title or "").strip()
        sections: list[tuple[str, list[str]]] = [("", [])]
        for p in d.paragraphs:
            text = p.text.strip()
            if not text:
                continue
            style = (p.style.name if p.style is not None else "") or ""
            if style.startswith("Heading") or style == "Title":
                if style == "Title" and not title:
                    title = text
                    continue
                sections.append((text, []))
            else:
                sections[-1][1].append(text)
        for table in d.tables:  # tables after the running text: their cells, row by row
            rows = [" | ".join(c.text.strip() for c in row.cells) for row in table.rows]
            sections[-1][1].extend(r for r in rows if r.strip(" |"))
    except Exception as e:  # python-docx raises zipfile/KeyError/ValueError types on bad files
        raise Unreadable(f"not a readable DOCX ({type(e).__name__}: {e})") from None
    return _sections(title, sections)


def _sections(title: str, sections: list[tuple[str, list[str]]]) -> Parsed:
    if not title:
        title = next((h for h, _ in sections if h), "")
    parts = [(f"s{n}", heading, "\n".join(body)) for n, (heading, body) in enumerate(sections)]
    if not any(t.strip() for _, _, t in parts):
        raise Unreadable("no text")
    return Parsed(title, parts)


READERS: dict[str, Callable[[Path], Parsed]] = {
    ".pdf": read_pdf,
    ".html": read_html,
    ".htm": read_html,
    ".docx": read_docx,
}


def document_passages(path: Path, doc_id: str) -> Iterator[Doc]:
    """The passages of one PDF/HTML/DOCX file (raises :class:`Unreadable`)."""
    parsed = READERS[path.suffix.lower()](path)
    title = parsed.title or path.stem
    for anchor, heading, text in parsed.parts:
        words = text.split()
        if not words:
            continue
        ptitle = f"{title}: {heading}" if heading and heading != title else title
        for k, (s, e) in enumerate(_windows(words, PASSAGE_WORDS, 0), 1):
            yield Doc(id=f"{doc_id}#{anchor}-{k}", title=ptitle, text=" ".join(words[s:e]))
