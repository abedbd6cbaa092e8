"""Every prompt lives in a template file here (Jinja2); no prompt text in Python."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

import jinja2


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(_load),
        undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string
        keep_trailing_newline=False,
        autoescape=False,
    )


def _load(name: str) -> str:
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


class Prompts:
    """One role's prompt set, bound once: every template the role renders goes through it, so a set's own
    template (``prompts/<set>/<name>``) cannot be missed by a call that forgot to name the set. The role
    configs hand theirs out as ``cfg.prompts``."""

    __slots__ = ("prompt_set",)

    def __init__(self, prompt_set: str = "default") -> None:
        self.prompt_set = prompt_set

    def __call__(self, name: str, **variables: Any) -> str:
        return render(name, self.prompt_set, **variables)

    def __repr__(self) -> str:
        return f"Prompts({self.prompt_set!r})"


def render(name: str, prompt_set: str = "default", **variables: Any) -> str:
    """Render ``prompts/<name>`` (e.g. ``"solver_system.j2"``) with ``variables``.

    A ``prompt_set`` other than ``default`` (a protocol profile, e.g. ``sage``) takes
    ``prompts/<set>/<name>`` when the set has that template, else the default one.
    """
    if prompt_set != "default" and files(__package__).joinpath(prompt_set).joinpath(name).is_file():
        name = f"{prompt_set}/{name}"
    return _env().get_template(name).render(**variables).strip()
