"""The benchmark harness: every method side by side, interleaved over the same prompts in one process.

    python -m opttree_core bench --config benchmarks/configs/headline.toml --out out/bench/headline
    python -m opttree_core bench-table out/bench/headline

Methods (the grid of ``bench_config.BenchConfig``): tree decoding for drafters × policies × budgets ×
temperatures, and peers per temperature: autoregressive decoding (``generate_autoregressive``),
Hugging Face assisted generation with the same draft (``generate(assistant_model=)``; only drafts
that are full causal LMs — EAGLE heads and n-gram tables are skipped with a logged reason) and HF
prompt lookup (``prompt_lookup_num_tokens``, the peer of ``ngram``). For each prompt every method
runs in turn, the order rotated per prompt, so drift hits all equally (ARCHITECTURE §4.9).

The run folder: ``config.json`` (resolved config, versions, device, start time), ``progress.jsonl``
(one line per finished (prompt, method) pair: its row and output tokens; what a resumed run
skips), ``results.parquet`` (one row per pair, rewritten atomically after each prompt),
``summary.parquet``/``summary.json`` (one row per method) and ``logs/<method-slug>/<prompt_id>/``
(a TreeLog per tree-decoding pair, via ``api.decode_prompt``).

Peers' numbers: MAL = new tokens / target forward calls (counted by a hook on the target), so HF's
prefill, which yields a token, counts as a step; verify_s = seconds inside the target's forward,
draft_s = the rest; build_s and E(A) are null. AR rows have mal 1 and null time split.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from .api import RunInfo, decode_prompt, encode_prompt, load_drafter, package_versions
from .atomic import write_atomic
from .bench_config import (
    BenchConfig,
    BenchPrompt,
    load_config,
    load_prompts,
    parse_config,
    turn_id,
)
from .decoding import DecodeConfig, check_prompt, generate, generate_autoregressive
from .drafters import DraftLMDrafter
from .errors import OptTreeError
from .metrics import mean_expected_acceptance, pooled_mal, speedup, tokens_per_second
from .models import LoadedModel, load_model
from .registry import policy_for_budget
from .shipped import resolve_manifest

ID_COLUMNS = ["method", "kind", "policy", "budget", "drafter", "temperature"]
RESULT_COLUMNS = ID_COLUMNS + ["dataset", "category", "prompt_id", "new_tokens", "steps", "mal", "seconds",
                               "tokens_per_s", "draft_s", "verify_s", "build_s", "expected_acceptance", "log_dir",
                               "output_matches_ar"]
SUMMARY_COLUMNS = ID_COLUMNS + ["n_prompts", "new_tokens", "mal", "tokens_per_s", "speedup", "draft_s", "verify_s",
                                "build_s", "expected_acceptance"]
TIMING_COLUMNS = ["seconds", "tokens_per_s", "draft_s", "verify_s", "build_s"]


@dataclass(frozen=True)
class Method:
    label: str
    kind: str  # "tree" | "ar" | "hf-assisted" | "hf-prompt-lookup"
    temperature: float
    policy: str | None = None
    budget: int | None = None
    drafter: str | None = None

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.label.replace("=", "").replace(" ", "_")).strip("-")


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    results: pd.DataFrame
    summary: pd.DataFrame
    skipped: list[str]  # methods left out, each with its reason
    ran: int  # (prompt, method) pairs run by this call
    resumed: int  # pairs found finished in the run folder and not redone


def _t(temperature: float) -> str:
    return f"T={temperature:g}"


def hf_assistant(drafter):
    """The HF causal LM behind a drafter, usable as ``generate(assistant_model=)``; None if there is none."""
    return drafter.model if isinstance(drafter, DraftLMDrafter) else None


def build_methods(config: BenchConfig, drafters: dict) -> tuple[list[Method], list[str]]:
    """The method grid in a fixed order, and the peers that cannot run, each with its reason."""
    methods, skipped = [], []
    for t in config.temperatures:
        methods.append(Method(f"ar {_t(t)}", "ar", t))
        for name in config.drafters:
            for policy in config.policies:
                methods += [Method(f"{policy} n={n} {name} {_t(t)}", "tree", t, policy, n, name) for n in config.budgets]
            if "hf-assisted" in config.peers and hf_assistant(drafters[name]) is not None:
                methods.append(Method(f"hf-assisted {name} {_t(t)}", "hf-assisted", t, drafter=name))
        if "hf-prompt-lookup" in config.peers:
            k = config.prompt_lookup_num_tokens
            methods.append(Method(f"hf-prompt-lookup k={k} {_t(t)}", "hf-prompt-lookup", t))
    if "hf-assisted" in config.peers:
        skipped += [f"hf-assisted with '{name}': its {type(d).__name__} is not a full causal LM, so "
                    f"generate(assistant_model=) cannot use it" for name, d in drafters.items()
                    if hf_assistant(d) is None]
    return methods, skipped


# --- one (prompt, method) pair ----------------------------------------------------------------

class _TargetCalls:
    """Counts the target's forward calls and the seconds spent inside them (forward hooks)."""

    def __init__(self, model):
        self.calls, self.seconds, self._t = 0, 0.0, 0.0
        self.handles = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post)]

    def _pre(self, module, args):
        self._t = time.perf_counter()

    def _post(self, module, args, output):
        self.calls += 1
        self.seconds += time.perf_counter() - self._t

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _decode_config(config: BenchConfig, temperature: float) -> DecodeConfig:
    return DecodeConfig(max_new_tokens=config.max_new_tokens, max_time=config.max_time, temperature=temperature,
                        seed=config.seed)


def _peer_row(tokens: list[int], steps: int, seconds: float, verify_s: float | None) -> dict:
    row = {"new_tokens": len(tokens), "steps": steps, "mal": pooled_mal(len(tokens), steps), "seconds": seconds,
           "tokens_per_s": tokens_per_second(len(tokens), seconds), "draft_s": None, "verify_s": None,
           "build_s": None, "expected_acceptance": None, "log_dir": None}
    if verify_s is not None:
        row.update(draft_s=max(seconds - verify_s, 0.0), verify_s=verify_s)
    return row


def _run_ar(bench, method: Method, prompt_ids: torch.Tensor) -> tuple[dict, list[int]]:
    torch.manual_seed(bench.config.seed)
    result = generate_autoregressive(bench.target.model, prompt_ids, _decode_config(bench.config, method.temperature))
    return _peer_row(result.token_ids, result.steps, result.seconds, None), result.token_ids


def _pad_id(model) -> int | None:
    pad = model.generation_config.pad_token_id
    eos = model.generation_config.eos_token_id
    return pad if pad is not None else eos[0] if isinstance(eos, list) else eos


def _run_hf(bench, method: Method, prompt_ids: torch.Tensor) -> tuple[dict, list[int]]:
    """HF generate with an assistant model or prompt lookup, same length cap, temperature and seed."""
    model, config = bench.target.model, bench.config
    kwargs = {"max_new_tokens": config.max_new_tokens, "attention_mask": torch.ones_like(prompt_ids)[None],
              "pad_token_id": _pad_id(model),
              "do_sample": method.temperature > 0}
    if method.temperature > 0:
        kwargs.update(temperature=method.temperature, top_k=0, top_p=1.0)
    if config.max_time is not None:
        kwargs["max_time"] = config.max_time
    if method.kind == "hf-assisted":
        kwargs["assistant_model"] = hf_assistant(bench.drafters[method.drafter])
    else:
        kwargs["prompt_lookup_num_tokens"] = config.prompt_lookup_num_tokens
    torch.manual_seed(config.seed)
    counter = _TargetCalls(model)
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(prompt_ids[None], **kwargs)
        seconds = time.perf_counter() - start
    finally:
        counter.remove()
    tokens = out[0, prompt_ids.numel():].tolist()
    return _peer_row(tokens, counter.calls, seconds, counter.seconds), tokens


def _run_tree(bench, method: Method, prompt: BenchPrompt, prompt_ids: torch.Tensor) -> tuple[dict, list[int]]:
    config = bench.config
    policy = policy_for_budget(method.policy, method.budget, **config.policy_params.get(method.policy, {}))
    decode = _decode_config(config, method.temperature)
    info = RunInfo(target=bench.target.name, draft=method.drafter, policy=policy.name,
                   policy_config=asdict(policy.config), decode_config=asdict(decode), prompt=prompt.text,
                   chat=prompt.chat, seed=config.seed, device=config.device, dtype=config.dtype)
    log_dir = Path("logs") / method.slug / prompt.prompt_id
    result = decode_prompt(bench.target, bench.drafters[method.drafter], policy, prompt_ids, decode, info,
                           log_path=bench.out_dir / log_dir)
    steps = result.log.to_frames().steps
    row = {"new_tokens": len(result.token_ids), "steps": result.steps, "mal": result.mal, "seconds": result.seconds,
           "tokens_per_s": result.tokens_per_s, "draft_s": float(steps["draft_s"].sum()),
           "verify_s": float(steps["verify_s"].sum()), "build_s": float(steps["build_s"].sum()),
           "expected_acceptance": mean_expected_acceptance(steps["ea"].tolist()), "log_dir": log_dir.as_posix()}
    return row, result.token_ids


# --- prompts, progress and results ------------------------------------------------------------

@dataclass
class _Bench:
    config: BenchConfig
    target: LoadedModel
    drafters: dict
    out_dir: Path
    records: dict  # (prompt_id, method label) → {"row": ..., "token_ids": ...}


def conversation_ids(bench: _Bench, prompt: BenchPrompt, temperature: float) -> torch.Tensor:
    """The prompt's token ids (L,): its text, or for a later turn the conversation so far, whose
    earlier answers are AR's at the same temperature."""
    tokenizer = bench.target.tokenizer
    if prompt.turn == 0:
        return encode_prompt(tokenizer, prompt.text, chat=prompt.chat)
    messages, base = [], prompt.prompt_id.rsplit("-turn", 1)[0]
    for k in range(prompt.turn):
        answer = bench.records.get((turn_id(base, k), f"ar {_t(temperature)}"))
        if answer is None:
            raise OptTreeError(f"{prompt.prompt_id}: turn {k + 1}'s AR answer is missing from the run")
        messages += [{"role": "user", "content": prompt.turns[k]},
                     {"role": "assistant", "content": tokenizer.decode(answer["token_ids"], skip_special_tokens=True)}]
    messages.append({"role": "user", "content": prompt.text})
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    return torch.tensor(list(ids), dtype=torch.long)


def run_pair(bench: _Bench, method: Method, prompt: BenchPrompt) -> dict:
    """Run one method on one prompt; returns its progress record (row without output_matches_ar)."""
    ids = check_prompt(bench.target.model, conversation_ids(bench, prompt, method.temperature),
                       bench.config.max_new_tokens)
    if method.kind == "tree":
        row, tokens = _run_tree(bench, method, prompt, ids)
    elif method.kind == "ar":
        row, tokens = _run_ar(bench, method, ids)
    else:
        row, tokens = _run_hf(bench, method, ids)
    ident = {"method": method.label, "kind": method.kind, "policy": method.policy, "budget": method.budget,
             "drafter": method.drafter, "temperature": method.temperature, "dataset": prompt.dataset,
             "category": prompt.category, "prompt_id": prompt.prompt_id}
    return {"row": {**ident, **row}, "token_ids": tokens}


def read_progress(out_dir: Path) -> dict:
    """Finished pairs from progress.jsonl; a torn last line (a crash mid-write) is ignored."""
    path, records = out_dir / "progress.jsonl", {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[(record["row"]["prompt_id"], record["row"]["method"])] = record
    return records


def _append_progress(out_dir: Path, record: dict) -> None:
    with open(out_dir / "progress.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def results_frame(records: dict) -> pd.DataFrame:
    """One row per finished pair; at T = 0 ``output_matches_ar`` compares its tokens with AR's."""
    rows = []
    for (prompt_id, _), record in records.items():
        row, matches = dict(record["row"]), None
        if row["temperature"] == 0:
            ar = records.get((prompt_id, f"ar {_t(0.0)}"))
            matches = None if ar is None else record["token_ids"] == ar["token_ids"]
        rows.append({**row, "output_matches_ar": matches})
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    frame["budget"] = frame["budget"].astype("Int64")
    frame["output_matches_ar"] = frame["output_matches_ar"].astype("boolean")
    for column in ("draft_s", "verify_s", "build_s", "expected_acceptance"):
        frame[column] = frame[column].astype("float64")
    return frame


def _write_results(out_dir: Path, records: dict) -> pd.DataFrame:
    frame = results_frame(records)
    write_atomic(out_dir / "results.parquet", lambda p: frame.to_parquet(p, index=False))
    return frame


def _check_or_write_config(out_dir: Path, config: BenchConfig, methods: list[Method], skipped: list[str],
                           n_prompts: int) -> None:
    path, resolved = out_dir / "config.json", config.to_dict()
    if path.is_file():
        old = json.loads(path.read_text())
        if old["config"] != resolved:
            changed = sorted(k for k in resolved if old["config"].get(k) != resolved[k])
            raise OptTreeError(f"{out_dir} was run with another config (changed: {', '.join(changed)}): "
                               f"resume with the same config or pick a new --out")
        old.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        meta = old
    else:
        meta = {"config": resolved, "methods": [m.label for m in methods], "skipped": skipped, "n_prompts": n_prompts,
                "device": config.device, "torch_device": torch.cuda.get_device_name() if config.device.startswith(
                    "cuda") else config.device, "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "versions": package_versions()}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda p: p.write_text(json.dumps(meta, indent=2)))


# --- the run ----------------------------------------------------------------------------------

def _as_config(config) -> BenchConfig:
    if isinstance(config, BenchConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config, Path.cwd())
    return load_config(config)


def _warm_up(bench: _Bench, methods: list[Method], prompt: BenchPrompt) -> None:
    """A few greedy tokens of AR and of each drafter, unrecorded, so no timed method pays the warm-up."""
    model, warm = bench.target.model, DecodeConfig(max_new_tokens=4)
    ids = check_prompt(model, encode_prompt(bench.target.tokenizer, prompt.turns[0], chat=prompt.chat), 4)
    generate_autoregressive(model, ids, warm)
    for method in {m.drafter: m for m in methods if m.kind == "tree"}.values():
        policy = policy_for_budget(method.policy, method.budget, **bench.config.policy_params.get(method.policy, {}))
        generate(model, bench.drafters[method.drafter], policy, ids, warm)


def run_bench(config: BenchConfig | str | os.PathLike | dict, out_dir: str | os.PathLike, progress: bool = True,
              on_pair: Callable[[str, str], None] | None = None) -> RunResult:
    """Run (or resume) the benchmark grid into ``out_dir``; ``on_pair(prompt_id, method)`` after each pair."""
    config, out_dir = _as_config(config), Path(out_dir)
    prompts = load_prompts(config)
    target = load_model(config.target, device=config.device, dtype=config.dtype)
    drafters = {name: load_drafter(name, target, draft_vocab=config.draft_vocab if resolve_manifest(name) else None,
                                   device=config.device, dtype=config.dtype) for name in config.drafters}
    methods, skipped = build_methods(config, drafters)
    _check_or_write_config(out_dir, config, methods, skipped, len(prompts))
    for reason in skipped:
        print(f"bench: skipped {reason}", file=sys.stderr)
    bench = _Bench(config, target, drafters, out_dir, read_progress(out_dir))
    resumed, ran = len(bench.records), 0
    todo = [(i, p) for i, p in enumerate(prompts) if any((p.prompt_id, m.label) not in bench.records for m in methods)]
    bar = _bar(progress, len(prompts) * len(methods), resumed)
    try:
        if todo:
            _warm_up(bench, methods, todo[0][1])
        for i, prompt in todo:
            try:
                for method in methods[i % len(methods):] + methods[:i % len(methods)]:
                    if (prompt.prompt_id, method.label) in bench.records:
                        continue
                    record = run_pair(bench, method, prompt)
                    _append_progress(out_dir, record)
                    bench.records[(prompt.prompt_id, method.label)] = record
                    ran += 1
                    if bar is not None:
                        bar.update(1)
                    if on_pair is not None:
                        on_pair(prompt.prompt_id, method.label)
            finally:
                results = _write_results(out_dir, bench.records)
    finally:
        if bar is not None:
            bar.close()
    results = _write_results(out_dir, bench.records)
    summary = write_summary(out_dir, results)
    return RunResult(out_dir, results, summary, skipped, ran, resumed)


def _bar(progress: bool, total: int, done: int):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="pair", desc="bench")


# --- summary ----------------------------------------------------------------------------------

def _totals(rows: pd.DataFrame) -> tuple[int, float]:
    return int(rows["new_tokens"].sum()), float(rows["seconds"].sum())


def _summary_row(rows: pd.DataFrame, ar: pd.DataFrame) -> dict:
    """One method's totals; speedup over AR at the same temperature on the prompts both finished."""
    tokens, seconds = _totals(rows)
    common = rows["prompt_id"].isin(ar["prompt_id"])
    m_tokens, m_seconds = _totals(rows[common])
    a_tokens, a_seconds = _totals(ar[ar["prompt_id"].isin(rows["prompt_id"])])
    ea = rows.dropna(subset=["expected_acceptance"])
    split = {c: (float(rows[c].sum()) if rows[c].notna().any() else None) for c in ("draft_s", "verify_s", "build_s")}
    return {**{c: rows[c].iloc[0] for c in ID_COLUMNS}, "n_prompts": int(rows["prompt_id"].nunique()),
            "new_tokens": tokens, "mal": pooled_mal(tokens, int(rows["steps"].sum())),
            "tokens_per_s": tokens_per_second(tokens, seconds),
            "speedup": speedup(tokens_per_second(m_tokens, m_seconds), tokens_per_second(a_tokens, a_seconds)),
            **split, "expected_acceptance": (mean_expected_acceptance(ea["expected_acceptance"].tolist(),
                                                                      ea["steps"].tolist()) if len(ea) else None)}


def summary_frame(results: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for _, group in results.groupby("method", sort=False):
        ar = results[(results["kind"] == "ar") & (results["temperature"] == group["temperature"].iloc[0])]
        rows.append(_summary_row(group, ar))
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    frame["budget"] = frame["budget"].astype("Int64")
    for column in ("draft_s", "verify_s", "build_s", "expected_acceptance"):
        frame[column] = frame[column].astype("float64")
    return frame


def write_summary(run_dir: Path, results: pd.DataFrame) -> pd.DataFrame:
    summary = summary_frame(results)
    write_atomic(run_dir / "summary.parquet", lambda p: summary.to_parquet(p, index=False))
    records = json.loads(summary.to_json(orient="records"))
    write_atomic(run_dir / "summary.json", lambda p: p.write_text(json.dumps(records, indent=1)))
    return summary


def summarize(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The per-method summary of a run folder, recomputed from its results.parquet."""
    path = Path(run_dir) / "results.parquet"
    if not path.is_file():
        raise OptTreeError(f"{run_dir} is not a bench run: it has no results.parquet")
    return summary_frame(pd.read_parquet(path))


def markdown_table(summary: pd.DataFrame) -> str:
    """Per temperature: MAL / speedup for each drafter × policy (rows) and budget (columns), then the peers."""
    out = []
    for t, at_t in summary.groupby("temperature", sort=True):
        trees = at_t[at_t["kind"] == "tree"]
        budgets = sorted(int(b) for b in trees["budget"].dropna().unique())
        out += [f"### T = {t:g} (cells: MAL / speedup over AR)", "",
                "| drafter | policy | " + " | ".join(f"n={b}" for b in budgets) + " |",
                "| --- | --- | " + " | ".join("---:" for _ in budgets) + " |"]
        for (drafter, policy), rows in trees.groupby(["drafter", "policy"], sort=False):
            by_budget = {int(r.budget): f"{r.mal:.2f} / {r.speedup:.2f}×" for r in rows.itertuples()}
            out.append(f"| {drafter} | {policy} | " + " | ".join(by_budget.get(b, "–") for b in budgets) + " |")
        out += ["", "| peer | MAL | tokens/s | speedup |", "| --- | ---: | ---: | ---: |"]
        out += [f"| {r.method} | {r.mal:.2f} | {r.tokens_per_s:.1f} | {r.speedup:.2f}× |"
                for r in at_t[at_t["kind"] != "tree"].itertuples()]
        out.append("")
    return "\n".join(out)
