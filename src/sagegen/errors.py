"""User-facing errors: the CLI prints their message (which names the file/line/field) without a traceback."""

from __future__ import annotations

#: Secrets (API keys) this process holds; every text that may leave it passes :func:`scrub`.
_SECRETS: set[str] = set()
#: Shorter values are not masked: replacing a 3-letter "key" would garble unrelated text.
_MIN_SECRET_CHARS = 8


def register_secret(value: str | None) -> None:
    """Remember a secret so :func:`scrub` masks it wherever it would be printed or stored."""
    if value and len(value.strip()) >= _MIN_SECRET_CHARS:
        _SECRETS.add(value.strip())


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***`` (longest first: one may contain another)."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


class SagegenError(Exception):
    """An error a user can fix; the message says what and where (secrets masked, see :func:`scrub`)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(scrub(a) if isinstance(a, str) else a for a in args))


class BackendError(SagegenError):
    """One failed try of a backend call (retried by the backend's own loop): the text a backend error
    becomes. Backend-neutral, so retry warnings, final errors and ledger rows built from it are all
    masked whichever client produced it."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.wait = wait


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
