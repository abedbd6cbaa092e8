"""Named profiles shipped as data (``profiles/<name>.yaml``): ``sage`` = the authors' release.

A profile is a partial config; ``load_config(..., base=load_profile(name))`` puts it under the
user's file and overrides. The behaviour it switches on lives where each component reads its own
config; the few steps the release does differently (its reviser and its feedback transcript) live
in :mod:`sagegen.agents.release`.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import yaml

from sagegen.errors import ConfigError

PROFILES = ("sage",)


def profile_text(name: str) -> str:
    """The profile's YAML as shipped (comments included), to read or copy as a starting config."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r} (known: default, {', '.join(PROFILES)})")
    return files(__package__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def load_profile(name: str | None) -> dict[str, Any]:
    """The profile as a config mapping; ``None``/``default`` is the empty profile."""
    if name in (None, "", "default"):
        return {}
    data = yaml.safe_load(profile_text(name))
    return data if isinstance(data, dict) else {}
