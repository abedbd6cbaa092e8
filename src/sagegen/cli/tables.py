"""The terminal face of :mod:`sagegen.analysis.tables`: a thin rich adapter, no numbers decided here."""

from __future__ import annotations

from typing import Any

from rich.table import Table as RichTable

from sagegen.analysis.tables import Table, agreement_line, analysis_tables, import_line, quality_lines


def render_rich(table: Table) -> RichTable:
    t = RichTable(title=table.title)
    for c in table.columns:
        t.add_column(c.label, justify="left" if c.text else "right")
    for row in table.cells():
        t.add_row(*row)
    footer = table.footer_cells()
    if footer is not None:
        t.add_section()
        t.add_row(*footer, style="bold")
    return t


def print_analysis(result: dict[str, Any], console: Any) -> None:
    """``sagegen analyze``: the run's main tables and quality checks (the JSON has everything)."""
    console.print(f"[bold]{result.get('run_id', '')}[/]")
    imported = import_line(result)
    if imported:
        console.print(imported, highlight=False, markup=False)
    for table in analysis_tables(result):
        console.print(render_rich(table))
        if table.id == "targets":
            console.print(f"difficulty agreement: {agreement_line(result)}")
    for line in quality_lines(result):
        console.print(line, highlight=False)
