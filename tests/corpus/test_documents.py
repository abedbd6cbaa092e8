"""A corpus folder of real PDF, HTML and DOCX files made here: anchored passages; a corrupt file skipped."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sagegen.config import CorpusConfig
from sagegen.corpus import load_corpus

fpdf = pytest.importorskip("fpdf")
docx = pytest.importorskip("docx")
pytest.importorskip("pypdf")
pytest.importorskip("bs4")


def make_pdf(path: Path) -> None:
    pdf = fpdf.FPDF()
    pdf.set_title("Annual Report")
    pdf.set_font("Helvetica", size=11)
    pdf.add_page()
    pdf.multi_cell(0, 6, "The observatory was founded in 1874 by the astronomer Clara Voss.")
    pdf.add_page()
    pdf.multi_cell(0, 6, " ".join(f"Sentence number {i} about the comet survey." for i in range(60)))
    pdf.output(str(path))


def make_docx(path: Path) -> None:
    d = docx.Document()
    d.core_properties.title = "Field Memo"
    d.add_paragraph("Opening remark before any heading.")
    d.add_heading("Methods", level=1)
    d.add_paragraph("Samples were taken from the river Aller every Tuesday.")
    d.add_heading("Results", level=1)
    d.add_paragraph("The nitrate level peaked at 41 mg per litre in March.")
    table = d.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "station", "Verden"
    d.save(str(path))


HTML = """<!doctype html><html><head><title>Bridge Guide</title><style>p {color: red}</style>
<script>var hidden = "never indexed";</script></head><body>
<nav>Home | About</nav>
<h1>Bridge Guide</h1><p>An introduction to old bridges.</p>
<h2>The Garabit viaduct</h2><p>The viaduct was built by <b>Gustave Eiffel</b> between 1880 and 1884.</p>
<ul><li>Length: 565 m</li><li><p>nested paragraph in a list item</p></li></ul>
<h2>Pont Neuf</h2><p>The oldest standing bridge across the Seine in Paris.</p>
</body></html>"""


def test_folder_of_pdf_html_docx(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    make_pdf(root / "report.pdf")
    make_docx(root / "sub" / "memo.docx")
    (root / "guide.html").write_text(HTML, encoding="utf-8")
    (root / "notes.md").write_text("# Notes\nplain markdown stays one document\n", encoding="utf-8")
    (root / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage that is not a pdf\n")
    with caplog.at_level(logging.INFO, logger="sagegen.corpus"):
        docs = {d.id: d for d in load_corpus(CorpusConfig(path=str(root)))}

    assert docs["report.pdf#p1-1"].title == "Annual Report"
    assert "founded in 1874 by the astronomer Clara Voss" in docs["report.pdf#p1-1"].text
    page2 = sorted(k for k in docs if k.startswith("report.pdf#p2-"))
    assert page2 == ["report.pdf#p2-1", "report.pdf#p2-2", "report.pdf#p2-3"]  # 420 words on page 2
    assert all(len(docs[k].text.split()) <= 200 for k in page2)
    assert docs["report.pdf#p2-2"].text.startswith("Sentence number 28 ")  # cut at a sentence end
    assert docs["report.pdf#p2-3"].text.endswith("Sentence number 59 about the comet survey.")

    assert docs["guide.html#s1-1"].title == "Bridge Guide"  # the h1 repeats the title: not doubled
    assert docs["guide.html#s1-1"].text == "An introduction to old bridges."
    assert docs["guide.html#s2-1"].title == "Bridge Guide: The Garabit viaduct"
    assert docs["guide.html#s2-1"].text.startswith("The viaduct was built by Gustave Eiffel between 1880")
    assert "Length: 565 m" in docs["guide.html#s2-1"].text
    assert docs["guide.html#s2-1"].text.count("nested paragraph") == 1
    assert docs["guide.html#s3-1"].title == "Bridge Guide: Pont Neuf"
    assert not any("never indexed" in d.text or "Home | About" in d.text for d in docs.values())

    assert docs["sub/memo.docx#s0-1"].text == "Opening remark before any heading."
    assert docs["sub/memo.docx#s1-1"].title == "Field Memo: Methods"
    assert "nitrate level peaked at 41 mg" in docs["sub/memo.docx#s2-1"].text
    assert "station | Verden" in docs["sub/memo.docx#s2-1"].text
    assert docs["notes.md"].title == "Notes"

    assert not any(k.startswith("broken.pdf") for k in docs)
    msgs = [r.getMessage() for r in caplog.records]
    assert any("skipped" in m and "broken.pdf" in m and "not a readable PDF" in m for m in msgs)
    summary = [m for m in msgs if m.startswith("corpus folder")]
    assert summary == [
        f"corpus folder {root}: 4 files read (1 docx, 1 html, 1 md, 1 pdf), 1 skipped "
        f"(broken.pdf), {len(docs)} passages"
    ]
