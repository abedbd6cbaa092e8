"""The Retriever protocol: batched search returning ranked hits per query."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sagegen.records import Hit


@runtime_checkable
class Retriever(Protocol):
    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Hit]]:
        """Top-``k`` hits for each query, best first; one list per query, in order."""
        ...
