"""Check a verl recipe's overrides against the *installed* verl: its Hydra config and its validation.

Run inside verl's environment (``run_verl.sh`` does, before training; the conformance tests do, in
the side venv ``scripts/verl_env.sh`` builds)::

    python -m sagegen.integrations.verl.check KEY=VALUE ...

It composes ``verl/trainer/config/ppo_trainer.yaml`` with the overrides through Hydra, exactly as
``verl.trainer.main_ppo`` does, so an unknown or renamed key fails here with Hydra's own message,
then runs verl's ``validate_config`` on the result (batch-size divisibility, micro-batch settings,
the actor/critic dataclass checks). verl releases rename keys (``multi_turn.max_turns`` became
``max_assistant_turns``), so versions sagegen has not checked are refused up front.

Exit codes: 0 = accepted, 2 = refused (one message on stderr), like sagegen's own CLI.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

#: verl releases whose config the recipe was composed and validated against (docs/train.md, "verl versions").
CHECKED_VERL_VERSIONS = ("0.7.1", "0.9.1")


class VerlCheckError(Exception):
    """The installed verl refuses the recipe (or is a version sagegen has not checked)."""


def check_version(version: str) -> None:
    if version not in CHECKED_VERL_VERSIONS:
        raise VerlCheckError(
            f"verl {version} is not a version sagegen has checked its recipe against "
            f"(checked: {', '.join(CHECKED_VERL_VERSIONS)}); install one of those "
            f"(pip install verl=={CHECKED_VERL_VERSIONS[-1]}) or check the overrides yourself and set "
            "SAGEGEN_VERL_UNCHECKED=1"
        )


def compose(overrides: list[str]) -> Any:
    """verl's trainer config with ``overrides`` applied by Hydra (as ``main_ppo`` composes it)."""
    import verl
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=list(overrides))


def validate(config: Any) -> None:
    """verl's own checks, with the arguments ``main_ppo`` passes."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_config(
        config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config)
    )


def check(overrides: list[str], *, allow_unchecked: bool = False) -> dict[str, Any]:
    """Compose and validate; returns what was checked, raises VerlCheckError with verl's reason."""
    import verl

    version = str(getattr(verl, "__version__", "unknown"))
    if not allow_unchecked:
        check_version(version)
    try:
        config = compose(overrides)
    except Exception as e:  # Hydra's ConfigCompositionException / OverrideParseException and kin
        raise VerlCheckError(f"verl {version}'s ppo_trainer.yaml rejects the overrides: {e}") from None
    try:
        validate(config)
    except Exception as e:  # verl asserts, raises ValueError, or fails instantiating its dataclasses
        raise VerlCheckError(f"verl {version}'s validate_config rejects the recipe: {e}") from None
    return {"verl": version, "overrides": len(overrides), "ok": True}


def main(argv: list[str] | None = None) -> int:
    import contextlib
    import io
    import os

    args = list(sys.argv[1:] if argv is None else argv)
    allow = os.environ.get("SAGEGEN_VERL_UNCHECKED", "") == "1"
    # verl prints progress while validating; keep stdout for the one JSON line callers parse.
    noise = io.StringIO()
    try:
        with contextlib.redirect_stdout(noise):
            result = check(args, allow_unchecked=allow)
    except VerlCheckError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
