"""The verl/Search-R1 outcome reward on crafted responses."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from sagegen.prompts import render
from sagegen.verdict import reward as R

GT = {"target": ["Ermengarde of Tours", "Ermengarde"]}


def test_right_answer_single_tag_scores_one() -> None:
    # One tag is the normal case for a response alone (verl passes only the response);
    # Search-R1's stock extractor would give 0 here.
    resp = "<think>Lothair II's mother...</think><answer> ermengarde of tours. </answer>"
    assert R.compute_score("sagegen", resp, GT) == 1.0


def test_wrong_answer_scores_zero_or_format_score() -> None:
    resp = "<think>hmm</think><answer>Judith of Bavaria</answer>"
    assert R.compute_score("sagegen", resp, GT) == 0.0
    assert R.compute_score("sagegen", resp, GT, format_score=0.2) == 0.2


def test_no_tag_and_unclosed_tag_score_zero() -> None:
    assert R.extract_answer("The answer is Ermengarde of Tours.") is None
    assert R.compute_score("x", "The answer is Ermengarde of Tours.", GT) == 0.0
    assert R.compute_score("x", "<answer>Ermengarde of Tours", GT) == 0.0
    # format_score is for a parseable wrong answer, not for no answer at all
    assert R.compute_score("x", "no tags", GT, format_score=0.2) == 0.0


def test_several_tags_last_one_counts() -> None:
    first_right = "<answer>Ermengarde</answer> wait, no <answer>Judith</answer>"
    last_right = "<answer>Judith</answer> on reflection <answer>Ermengarde</answer>"
    assert R.extract_answer(first_right) == "Judith"
    assert R.compute_score("x", first_right, GT) == 0.0
    assert R.compute_score("x", last_right, GT) == 1.0


def test_searchr1_prompt_plus_response_string() -> None:
    """Search-R1's reward manager decodes prompt+response; the prompt's example must not count."""
    prompt = render("export_searchr1.j2", question="When did Lothair II's mother die?")
    assert "<answer> Beijing </answer>" in prompt
    # base model, no chat template: the example tag is the only tag when the model never answered
    assert R.compute_score("nq", prompt + "\n<think>I don't know</think>", {"target": ["Beijing"]}) == 0.0
    assert (
        R.compute_score("nq", prompt + "<think>x</think><answer>Beijing</answer>", {"target": ["Beijing"]})
        == 1.0
    )
    # chat template: cut at the assistant marker
    chat = (
        f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n<think>search</think>"
        "<search> Lothair II mother </search>\n\n<information>Doc 1(Title: Lothair II) "
        "<answer>Beijing</answer> ...</information>\n\n<think>found</think>"
        "<answer>20 March 851</answer><|im_end|>"
    )
    assert R.compute_score("nq", chat, {"target": ["20 March 851"]}) == 1.0
    # the retrieved passage's planted tag is never the model's answer
    no_answer = chat.split("<think>found")[0]
    assert R.extract_answer(no_answer) is None


def test_ground_truth_forms() -> None:
    np = pytest.importorskip("numpy")
    resp = "<answer>1925</answer>"
    for gt in (
        {"target": ["1925"]},
        ["1924", "1925"],
        "1925",
        ("1925",),
        1925,
        {"target": np.array(["1925"])},
    ):
        assert R.compute_score("x", resp, gt) == 1.0, gt
    assert R.compute_score("x", resp, None) == 0.0
    assert R.compute_score("x", resp, {"target": []}) == 0.0
    assert R.golden_answers({"target": np.array(["a", "b"], dtype=object)}) == ["a", "b"]


def test_f1_subem_and_format_variants() -> None:
    resp = "<think>..</think><answer>Ermengarde of Tours, Frankish queen</answer>"
    f1 = R.compute_score_f1("x", resp, {"target": ["Ermengarde of Tours"]})
    # prediction tokens: ermengarde of tours frankish queen (5); gold: 3; overlap 3 -> P=.6 R=1 F1=.75
    assert f1 == pytest.approx(0.75)
    assert (
        R.compute_score("x", resp, {"target": ["Ermengarde of Tours"]}, method="f1", f1_threshold=0.8) == 0.0
    )
    assert R.compute_score_subem("x", resp, {"target": ["Ermengarde of Tours"]}) == 1.0
    assert R.compute_score("x", resp, {"target": ["Ermengarde of Tours"]}) == 0.0

    good = "<think>a</think><search>q</search><information>..</information><think>b</think><answer>X</answer>"
    assert R.compute_score_format("x", good, ["X"]) == 1.0
    assert R.compute_score_format("x", good, ["Y"]) == pytest.approx(0.1)
    unbalanced = "<think>a<search>q</search><answer>X</answer>"
    assert R.compute_score_format("x", unbalanced, ["X"]) == 0.0
    trailing = "<think>a</think><answer>X</answer> and more chatter"
    assert R.compute_score_format("x", trailing, ["X"]) == 0.0
    assert R.compute_score_format("x", good + "<|im_end|>", ["X"]) == 1.0
    with pytest.raises(ValueError, match="unknown reward method"):
        R.compute_score("x", resp, ["X"], method="bleu")


def test_searchr1_keyword_call_convention() -> None:
    # Search-R1's RewardManager calls fn(solution_str=, ground_truth=, format_score=), no data_source
    assert (
        R.compute_score(
            solution_str="<answer>Paris</answer>", ground_truth={"target": ["paris"]}, format_score=0.0
        )
        == 1.0
    )
    assert (
        R.compute_score(solution_str="<answer>Paris</answer>", ground_truth=["paris"], method="strict") == 1.0
    )


def test_loads_by_file_path_like_verl(tmp_path: Path) -> None:
    """verl imports the file by path as a fresh module: it must work without the sagegen package."""
    src = Path(R.__file__)
    copy = tmp_path / "sagegen_reward.py"
    copy.write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    top_level = [
        ln for ln in copy.read_text(encoding="utf-8").splitlines() if ln.startswith(("import ", "from "))
    ]
    assert not any("sagegen" in ln for ln in top_level)
    spec = importlib.util.spec_from_file_location("custom_module", copy)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["custom_module"] = mod
    try:
        spec.loader.exec_module(mod)
        # verl's NaiveRewardManager call (keywords)
        gt = {"target": ["Paris"]}
        assert (
            mod.compute_score(
                data_source="sagegen",
                solution_str="<answer>Paris</answer>",
                ground_truth=gt,
                extra_info={"split": "train", "index": 0},
            )
            == 1.0
        )
    finally:
        sys.modules.pop("custom_module", None)
    # and with the standard library only: -I -S hides site-packages (and so sagegen) entirely
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('custom_module', {str(copy)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "assert 'sagegen' not in sys.modules\n"
        "print(m.compute_score('x', '<think>a</think><answer> The Paris </answer>', {'target': ['paris']}),"
        " m.compute_score_f1('x', '<answer>Paris France</answer>', ['Paris']))\n"
    )
    p = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["1.0", str(2 * 0.5 * 1 / 1.5)]


def test_normalisation_is_squads_and_the_judge_uses_it() -> None:
    # SQuAD v1.1's evaluate.py: lower, drop punctuation, drop articles, squeeze whitespace (in that
    # order: "U.S.A." loses its dots before the article rule sees it)
    cases = {
        "The Beatles!": "beatles",
        "  U.S.A. ": "usa",
        "an apple a day": "apple day",
        "20 March, 851": "20 march 851",
        "Theatre of the Absurd": "theatre of absurd",
        "A-ha": "aha",
        "Ça va, l'ami": "ça va lami",
    }
    assert {s: R.normalize_answer(s) for s in cases} == cases
    judge = pytest.importorskip("sagegen.verdict.judge")
    assert judge.normalize_answer is R.normalize_answer


class _Grader:
    """A loopback OpenAI-compatible server playing the LLM judge: 'yes' when the reply it is told
    to give for a response says so; records every request."""

    def __init__(self, replies: dict[str, str]):
        import http.server
        import json as _json
        import threading

        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = _json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                )
                prompt = body["messages"][0]["content"]
                reply = next(
                    (r for k, r in replies.items() if f"[response]: {k}\n" in prompt), "no verdict here"
                )
                if reply == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                data = _json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": reply}}]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_judge_reward_over_a_real_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    grader = _Grader(
        {
            "Ermengarde, Lothair's mother": "extracted_final_answer: Ermengarde\n**correct:** Yes",
            "Judith": "extracted_final_answer: Judith\nreasoning: different.\ncorrect: no\nconfidence: 90",
            "Broken": "500",
        }
    )
    monkeypatch.setenv("SAGEGEN_JUDGE_API_KEY", "sk-judge-test")
    try:
        kw = {"judge_url": grader.url, "judge_model": "grader"}
        info = {"question": "Who was Lothair II's mother?"}
        gt = {"target": ["Ermengarde of Tours"]}
        # exact match: no call
        assert R.compute_score_judge("s", "<answer>ermengarde of tours</answer>", gt, info, **kw) == 1.0
        assert grader.requests == []
        # the judge accepts a paraphrase EM would reject, and rejects a wrong answer
        assert (
            R.compute_score_judge("s", "<answer>Ermengarde, Lothair's mother</answer>", gt, info, **kw) == 1.0
        )
        assert R.compute_score("s", "<answer>Ermengarde, Lothair's mother</answer>", gt) == 0.0
        assert R.compute_score_judge("s", "<answer>Judith</answer>", gt, info, **kw) == 0.0
        req = grader.requests[0]
        assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer sk-judge-test"
        prompt = req["body"]["messages"][0]["content"]
        assert "[question]: Who was Lothair II's mother?" in prompt and "Ermengarde of Tours" in prompt
        assert "[[" not in prompt and req["body"]["model"] == "grader"
        # a failing server or an unreadable reply falls back to exact match, or raises on request
        assert R.compute_score_judge("s", "<answer>Broken</answer>", gt, info, **kw) == 0.0
        assert R.compute_score_judge("s", "<answer>Unreadable</answer>", gt, info, **kw) == 0.0
        with pytest.raises(OSError):
            R.compute_score_judge("s", "<answer>Broken</answer>", gt, info, on_error="raise", **kw)
        # no answer at all: 0 without a call
        n = len(grader.requests)
        assert R.compute_score_judge("s", "I think it is Ermengarde", gt, info, **kw) == 0.0
        assert len(grader.requests) == n
    finally:
        grader.close()
    with pytest.raises(ValueError, match="judge_url"):
        monkeypatch.delenv("SAGEGEN_JUDGE_URL", raising=False)
        R.compute_score_judge("s", "<answer>Judith</answer>", {"target": ["x"]})


def test_judge_verdict_parser_agrees_with_sagegen_judge() -> None:
    judge = pytest.importorskip("sagegen.verdict.judge")
    replies = [
        "correct: yes",
        "**correct:** No",
        "correct: 'true'",
        "Correct：YES",
        "reasoning: x\ncorrect: n",
        "correct: yes\n...\ncorrect: no",
        "nothing here",
        "correct: maybe",
    ]
    for r in replies:
        ours = R.parse_verdict(r)
        theirs = judge.parse_grader(r)
        assert ours == (theirs.correct if theirs else None), r
