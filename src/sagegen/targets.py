"""Target difficulty S: one number, a uniform range, or a distribution (a curriculum).

``pipeline.target`` accepts ``3``, ``"3"``, ``"3-7"`` (uniform over 3..7, the paper's setting) or
``{"3": 0.2, "5": 0.8}`` (weights, normalised). Sampling draws from a ``random.Random`` the
pipeline seeds per pair, so a pair's target never changes across reruns.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from sagegen.errors import ConfigError


@dataclass(frozen=True)
class TargetSpec:
    values: tuple[int, ...]
    weights: tuple[float, ...]

    def sample(self, rng: random.Random) -> int:
        if len(self.values) == 1:
            return self.values[0]
        return rng.choices(self.values, weights=self.weights, k=1)[0]

    def describe(self) -> str:
        if len(self.values) == 1:
            return str(self.values[0])
        if len(set(self.weights)) == 1 and list(self.values) == list(
            range(self.values[0], self.values[-1] + 1)
        ):
            return f"{self.values[0]}-{self.values[-1]} (uniform)"
        return ", ".join(f"{v}: {w:.2f}" for v, w in zip(self.values, self.weights, strict=True))


def parse_target(spec: int | str | dict[str, float] | dict[int, float]) -> TargetSpec:
    """Parse ``pipeline.target``; errors name the field and say what is accepted."""
    where = "pipeline.target"
    if isinstance(spec, bool):
        raise ConfigError(f"{where}: expected a number of searches, got {spec!r}")
    if isinstance(spec, int):
        return _single(spec, where)
    if isinstance(spec, str):
        text = spec.strip()
        if re.fullmatch(r"\d+", text):
            return _single(int(text), where)
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", text)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo < 1 or hi < lo:
                raise ConfigError(f"{where}: range {text!r} must be lo-hi with 1 <= lo <= hi")
            vals = tuple(range(lo, hi + 1))
            return TargetSpec(vals, tuple(1.0 for _ in vals))
        raise ConfigError(f"{where}: {spec!r} is not a number, a range like 3-7, or a distribution")
    if isinstance(spec, dict):
        if not spec:
            raise ConfigError(f"{where}: the distribution is empty")
        items: list[tuple[int, float]] = []
        for k, w in spec.items():
            try:
                v = int(k)
                wf = float(w)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{where}: entry {k!r}: {w!r} must map a number of searches to a weight"
                ) from None
            if v < 1 or wf < 0:
                raise ConfigError(f"{where}: entry {k!r}: {w!r}: searches must be >= 1 and weights >= 0")
            items.append((v, wf))
        total = sum(w for _, w in items)
        if total <= 0:
            raise ConfigError(f"{where}: weights sum to zero")
        items.sort()
        return TargetSpec(tuple(v for v, _ in items), tuple(w / total for _, w in items))
    raise ConfigError(f"{where}: unsupported value {spec!r}")


def _single(v: int, where: str) -> TargetSpec:
    if v < 1:
        raise ConfigError(f"{where}: must be >= 1, got {v}")
    return TargetSpec((v,), (1.0,))
