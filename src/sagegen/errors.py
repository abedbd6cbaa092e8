"""User-facing errors: the CLI prints their message (which names the file/line/field) without a traceback."""

from __future__ import annotations


class SagegenError(Exception):
    """An error a user can fix; the message says what and where."""


class InputError(SagegenError):
    """Bad input data: names the file, line and field."""

    def __init__(
        self, message: str, *, path: object = None, line: int | None = None, field: str | None = None
    ):
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ": ".join([", ".join(where)]) + ": " if where else ""
        super().__init__(prefix + message)
        self.path, self.line, self.field = path, line, field


class ConfigError(SagegenError):
    """Bad configuration: unknown key, wrong type, bad override."""


class IndexError_(SagegenError):
    """A missing, stale or mismatched index."""


class LLMError(SagegenError):
    """An LLM backend failed after its retries; the message never carries the API key."""
