"""What Search-R1's own client does with served hits (its steps, transcribed)."""

from __future__ import annotations

from typing import Any


def searchr1_information(result: list[dict[str, Any]]) -> str:
    """What Search-R1's rollout client puts in the prompt for one query's served hits.

    Same steps as its ``_passages2string`` plus the ``<information>`` wrapping in
    ``execute_predictions``: first line of ``contents`` = title, the rest = text, one
    ``Doc i(Title: …) …`` line per hit, the whole stripped.
    """
    lines = ""
    for i, item in enumerate(result):
        contents = item["document"]["contents"]
        title = contents.split("\n")[0]
        text = "\n".join(contents.split("\n")[1:])
        lines += f"Doc {i + 1}(Title: {title}) {text}\n"
    return f"<information>{lines.strip()}</information>"
