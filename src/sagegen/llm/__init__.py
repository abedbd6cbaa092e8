"""LLM backends: one protocol, one file per backend, chosen by name and imported lazily."""

from sagegen.llm.base import LLM, Message

__all__ = ["LLM", "Message"]
