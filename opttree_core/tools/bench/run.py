"""The benchmark harness: every method side by side, interleaved over the same prompts in one process.

    python -m opttree_core bench --config benchmarks/configs/headline.toml --out out/bench/headline
    python -m opttree_core bench-table out/bench/headline

For each prompt every method (``methods.py``) runs in turn, the order rotated per prompt, so drift
hits all equally (docs/architecture.md, "Traps": speedups from separate runs lie).

The run folder: ``config.json`` (resolved config, versions, device, start time), ``progress.jsonl``
(one line per finished (prompt, method) pair: its row and output tokens; what a resumed run
skips), ``results.parquet`` (one row per pair, rewritten atomically after each prompt),
``summary.parquet``/``summary.json`` (one row per method, ``summary.py``) and
``logs/<method-slug>/<prompt_id>/`` (a TreeLog per tree-decoding pair, via ``api.decode_prompt``).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ...api import encode_prompt, load_drafter, package_versions
from ...atomic import write_atomic
from ...decoding import DecodeConfig, check_prompt, generate, generate_autoregressive
from ...errors import OptTreeError
from ...models import load_model
from ...records import RESULT_COLUMNS
from ...shipped import resolve_manifest
from .config import BenchConfig, BenchPrompt, load_config, load_prompts, parse_config
from .methods import Bench, Method, _t, build_methods, run_pair
from .summary import write_summary


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    results: pd.DataFrame
    summary: pd.DataFrame
    skipped: list[str]  # methods left out, each with its reason
    ran: int  # (prompt, method) pairs run by this call
    resumed: int  # pairs found finished in the run folder and not redone


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


def _warm_up(bench: Bench, methods: list[Method], prompt: BenchPrompt) -> None:
    """A few greedy tokens of AR and of each drafter, unrecorded, so no timed method pays the warm-up."""
    model, warm = bench.target.model, DecodeConfig(max_new_tokens=4)
    ids = check_prompt(model, encode_prompt(bench.target.tokenizer, prompt.turns[0], chat=prompt.chat), 4)
    generate_autoregressive(model, ids, warm)
    for method in {m.drafter: m for m in methods if m.kind == "tree"}.values():
        generate(model, bench.drafters[method.drafter], bench.policy(method), ids, warm)


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
    bench = Bench(config, target, drafters, out_dir, read_progress(out_dir))
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


