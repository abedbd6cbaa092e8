"""User-facing errors: the CLI prints their message (which names the file/line/field) without a traceback."""

from __future__ import annotations

import re
from typing import Any

#: Secrets (API keys, passwords) this process holds; every text that may leave it passes :func:`scrub`.
_SECRETS: set[str] = set()
#: Shorter secrets are masked only where they stand as a whole token: replacing every "abc" inside
#: unrelated words would garble the text, while the key itself, however short, is never printed.
_SHORT_SECRET_CHARS = 8
#: ``scheme://userinfo@``: credentials written into a URL (``http://user:password@host``).
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/\s@]+(?:@[^/\s@]+)*)@")


def register_secret(value: str | None) -> None:
    """Remember a secret so :func:`scrub` masks it wherever it would be printed or stored."""
    if value and value.strip():
        _SECRETS.add(value.strip())


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***`` (longest first: one may contain
    another) and the credentials of every URL in it masked (:func:`mask_url_credentials`)."""
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret not in text:
            continue
        if len(secret) >= _SHORT_SECRET_CHARS:
            text = text.replace(secret, "***")
        else:
            text = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(secret)}(?![A-Za-z0-9_])", "***", text)
    return mask_url_credentials(text)


def mask_url_credentials(text: str) -> str:
    """Every ``scheme://user:password@`` in ``text`` as ``scheme://user:***@`` (and ``scheme://token@``
    as ``scheme://***@``): what is stored or printed never carries credentials a URL was given with."""
    if "@" not in text:
        return text
    return _URL_USERINFO.sub(_masked_userinfo, text)


def _masked_userinfo(m: re.Match[str]) -> str:
    user, colon, _password = m["userinfo"].partition(":")
    # A user name is kept (it says which account); a lone token in its place is a credential.
    return f"{m['scheme']}{user}:***@" if colon else f"{m['scheme']}***@"


def without_url_credentials(data: Any) -> Any:
    """``data`` (a config as stored: dicts, lists, strings) with :func:`mask_url_credentials` applied to
    every string in it; a config is stored (ledger, config.yaml, analysis.json) only through this."""
    if isinstance(data, str):
        return mask_url_credentials(data)
    if isinstance(data, dict):
        return {k: without_url_credentials(v) for k, v in data.items()}
    if isinstance(data, list):
        return [without_url_credentials(v) for v in data]
    return data


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
