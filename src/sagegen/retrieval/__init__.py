"""Retrievers: one tiny protocol, several backends (BM25, dense, hybrid, HTTP, web)."""

from sagegen.retrieval.base import Retriever

__all__ = ["Retriever"]
