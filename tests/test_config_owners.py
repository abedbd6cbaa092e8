"""One owner per config concept: each role samples at its own section's temperature, ``retrieval.topk``
is the passages per search unless a role sets its own, and a key that is not a field is named (exit 2),
never silently ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sage_loop_helpers import RoleScript, answer, final, infos, loop_pipeline, role, search, small_config
from sage_loop_helpers import run_cli as cli
from sagegen.config import Config, GeneratorConfig, SolverConfig, load_config
from sagegen.errors import ConfigError
from sagegen.profiles import load_profile


class _KeepLLM(RoleScript):
    def llm(self) -> Any:
        self.made = super().llm()
        return self.made


Q = "In which year was the founder of the city's oldest bridge born?"


async def test_each_role_samples_at_its_own_sections_temperature(tmp_path: Path) -> None:
    cfg = small_config(rounds=2)
    cfg.generator.temperature, cfg.solver.temperature, cfg.judge.temperature = 0.3, 0.9, 0.1
    cfg.judge.method, cfg.judge.em_shortcut = "llm", False  # every attempt asks the judge model

    def generator(m: Any) -> str:
        return search("bridge founder") if infos(m) < 1 else final(Q, "1832")

    script = _KeepLLM(
        generator=generator,
        reviser=generator,
        solver=lambda m: answer("1832"),  # right at once: too easy, so round 2 asks the reviser
        judge=lambda m: "extracted_final_answer: 1832\nreasoning: same year\ncorrect: yes\nconfidence: 100",
    )
    pipe, store = loop_pipeline(tmp_path, cfg, script)
    await pipe.run()
    llm = script.made  # the one scripted LLM behind every role here
    store.close()
    temps: dict[str, set[float]] = {}
    for call in llm.calls:
        temps.setdefault(role(call["messages"]), set()).add(call["temperature"])
    assert temps == {"generator": {0.3}, "reviser": {0.3}, "solver": {0.9}, "judge": {0.1}}


def test_retrieval_topk_is_the_passages_per_search_unless_a_role_sets_its_own() -> None:
    cfg = load_config(None, ["retrieval.topk=5"])
    assert (cfg.solver.topk, cfg.generator.topk, cfg.server.default_topk) == (5, 5, 5)
    cfg = load_config(None, ["retrieval.topk=5", "solver.topk=2"])
    assert (cfg.solver.topk, cfg.generator.topk, cfg.server.default_topk) == (2, 5, 5)
    cfg = Config()
    cfg.retrieval = cfg.retrieval.model_copy(update={"topk": 7})  # assignment validates again
    assert (cfg.solver.topk, cfg.generator.topk) == (7, 7)
    # A section built alone searches as the default does.
    assert SolverConfig().topk == GeneratorConfig().topk == Config().retrieval.topk == 3


def test_the_sage_profile_sets_each_knob_at_its_owner() -> None:
    cfg = load_config(None, ["retrieval.topk=4"], base=load_profile("sage"))
    assert cfg.generator.temperature == 1.0 and cfg.solver.temperature == 1.0 and cfg.judge.temperature == 0.0
    assert cfg.solver.topk == cfg.generator.topk == 4  # the profile's top-3 is retrieval.topk, so -s wins


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("llm:\n  temperature: 1.0\n", "llm.temperature"),
        ("solver_llm:\n  backend: openai\n  max_tokens: 256\n", "solver_llm.max_tokens"),
        (
            "solver_llms:\n  - {backend: openai}\n  - {backend: openai, max_tokens: 9}\n",
            "solver_llms.1.max_tokens",
        ),
    ],
)
def test_a_key_no_field_has_is_refused_by_name(tmp_path: Path, text: str, key: str) -> None:
    # No compatibility layer before a first release: a key that is not (or no longer) a field is named.
    path = tmp_path / "old.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}: {key}: Extra inputs are not permitted" in str(err.value)


def test_an_override_of_an_unknown_key_is_refused_too() -> None:
    with pytest.raises(ConfigError, match=r"llm\.temperature: Extra inputs are not permitted"):
        load_config(None, ["llm.temperature=0.5"])


def test_cli_exits_2_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "old.yaml").write_text("llm:\n  temperature: 1.0\n", encoding="utf-8")
    got = cli("generate", "-c", "old.yaml", "--out", "runs/x", "--no-progress", cwd=tmp_path, timeout=120)
    assert got.returncode == 2
    assert "old.yaml: llm.temperature: Extra inputs are not permitted" in got.stderr
    assert "Traceback" not in got.stderr and not (tmp_path / "runs").exists()
