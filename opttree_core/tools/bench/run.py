"""The benchmark harness: every method side by side, interleaved over the same prompts in one process.

    python -m opttree_core bench --config benchmarks/configs/headline.toml --out out/bench/headline
    python -m opttree_core bench-table out/bench/headline

For each prompt every method (``methods.py``) runs in turn, the order rotated per prompt, so drift
hits all equally (docs/architecture.md, "Traps": speedups from separate runs lie).

The run folder: ``config.json`` (resolved config, versions, device, start time, and each prompt's
sha256, so a resumed run refuses prompts that changed; its datasets may grow, by prompts added),
``progress.jsonl`` (one line per finished (prompt, method) pair: its row and output tokens; what a
resumed run skips), ``results.parquet`` (one row per pair, rewritten atomically after each prompt),
``summary.parquet``/``summary.json`` (one row per method, ``summary.py``) and
``logs/<method-slug>/<prompt_id>/`` (a TreeLog per tree-decoding pair: ``run_pair`` returns it as data,
``commit_pair`` writes it, then the pair's progress line). With ``ray=`` the prompts run on Ray workers
(``ray_grid.py``) and this process alone writes the folder, through the same functions.
Each row names the machine that measured it; a resumed run sets aside a prompt part-run on another
machine and runs it again whole (``sittings.py``), so every speedup is a ratio from one machine.
A run holds the folder's lock (``.NAME.lock`` beside it, ``atomic.path_lock``) from start to end, so
a second process on the same folder stops at once instead of running every pair again.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ...api import encode_prompt, package_versions
from ...atomic import lock_holder, path_lock, write_atomic
from ...decoding import DecodeConfig, check_prompt, generate_autoregressive
from ...drafters.registry import load_drafter
from ...errors import OptTreeError
from ...models import load_model
from ...machine import describe_machine
from ...records import MACHINE_COLUMN, RESULT_COLUMNS, write_log
from ...shipped import resolve_manifest
from .config import BenchConfig, BenchPrompt, load_config, parse_config
from .prompts import load_prompts
from .methods import Bench, Method, PairOutput, _t, build_methods, run_pair
from .sittings import part_run_elsewhere, set_aside
from .summary import write_summary


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    results: pd.DataFrame
    summary: pd.DataFrame
    skipped: list[str]  # methods left out, each with its reason
    ran: int  # (prompt, method) pairs run by this call
    resumed: int  # pairs found finished in the run folder and not redone


def _progress_record(line: str, where: str) -> dict:
    try:
        record = json.loads(line)
    except ValueError as e:
        raise OptTreeError(f"{where} is not JSON ({e}): delete that line to redo its pair, or pick a new --out") from e
    row = record.get("row") if isinstance(record, dict) else None
    if not (isinstance(row, dict) and isinstance(row.get("prompt_id"), str) and isinstance(row.get("method"), str)
            and isinstance(record.get("token_ids"), list)):
        raise OptTreeError(f"{where} is not a progress record of this harness (one needs row.prompt_id, row.method "
                           "and token_ids): delete that line to redo its pair, or pick a new --out")
    return record


def read_progress(out_dir: Path) -> dict:
    """Finished pairs from progress.jsonl. A torn last line (a crash mid-append: no newline at its
    end) is ignored, and its pair is redone; any other line that is not a progress record is a
    one-line OptTreeError naming it."""
    path, records = Path(out_dir) / "progress.jsonl", {}
    if not path.is_file():
        return records
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise OptTreeError(f"cannot read {path}: {e}") from e
    for number, line in enumerate(lines[:-1], 1):  # the last item: "" or the torn fragment
        if line.strip():
            record = _progress_record(line, f"{path} line {number}")
            records[(record["row"]["prompt_id"], record["row"]["method"])] = record
    return records


def _cut_torn_line(path: Path) -> None:
    """Cut a torn last line (a run killed mid-append) so that the next record starts a line of its own."""
    if path.is_file():
        with open(path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)


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
    frame = pd.DataFrame(rows, columns=RESULT_COLUMNS + [MACHINE_COLUMN])
    frame["budget"] = frame["budget"].astype("Int64")
    frame["output_matches_ar"] = frame["output_matches_ar"].astype("boolean")
    for column in ("draft_s", "verify_s", "build_s", "expected_acceptance"):
        frame[column] = frame[column].astype("float64")
    return frame


def _write_results(out_dir: Path, records: dict) -> pd.DataFrame:
    frame = results_frame(records)
    write_atomic(out_dir / "results.parquet", lambda p: frame.to_parquet(p, index=False))
    return frame


def _previous_run(out_dir: Path, config: BenchConfig, prompts: list[BenchPrompt]) -> dict | None:
    """The run folder's config.json when the folder holds a run of this config on these prompts
    (None: a new run). Anything else is a one-line OptTreeError, before anything is loaded or written."""
    path = out_dir / "config.json"
    if os.path.lexists(out_dir) and not out_dir.is_dir():
        raise OptTreeError(f"{out_dir} exists and is not a bench run folder (it is a file): pick another --out")
    if not path.is_file():
        if out_dir.is_dir() and any(not p.name.startswith(".") for p in out_dir.iterdir()):
            raise OptTreeError(f"{out_dir} exists and is not a bench run folder (it has no config.json): "
                               "pick another --out")
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OptTreeError(f"{path} is not valid JSON ({e}), so {out_dir} cannot be resumed: pick a new --out") from e
    if not isinstance(old, dict) or not isinstance(old.get("config"), dict):
        raise OptTreeError(f"{path} is not a bench run's config (it has no 'config' table): pick a new --out")
    resolved = config.to_dict()
    before, now = old.get("prompts"), {p.prompt_id: p.digest for p in prompts}
    if old["config"] != resolved:
        changed = sorted(k for k in resolved if old["config"].get(k) != resolved[k])
        if changed == ["datasets"] and _adds_prompts(before, now):
            return _grown(old, resolved, len(before))
        grow = " (datasets may change only by adding prompts)" if changed == ["datasets"] else ""
        raise OptTreeError(f"{out_dir} was run with another config (changed: {', '.join(changed)}){grow}: "
                           f"resume with the same config or pick a new --out")
    if before is not None and before != now:  # a folder from before prompt digests were kept: trusted once
        before = before if isinstance(before, dict) else {}
        changed = [k for k in now if k in before and before[k] != now[k]]
        other = sorted(set(now) ^ set(before))
        what = f"{len(changed)} prompt(s) changed, e.g. {changed[0]}" if changed else f"prompts differ, e.g. {other[0]}"
        raise OptTreeError(f"{out_dir} was run on other prompts ({what}): resume with the dataset files it "
                           "was run on, or pick a new --out")
    return old


def _adds_prompts(before, now: dict) -> bool:
    """Whether this config's prompts are the run folder's (same ids, same text) and more."""
    return isinstance(before, dict) and len(now) > len(before) and all(now.get(k) == v for k, v in before.items())


def _grown(old: dict, resolved: dict, n_before: int) -> dict:
    """The run folder's metadata for a resume that adds prompts: the new config, and in ``grown`` when
    and from which datasets (and how many prompts) it grew."""
    grown = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "datasets_before": old["config"]["datasets"],
             "prompts_before": n_before}
    return {**old, "config": resolved, "grown": [*old.get("grown", []), grown]}


def _check_records(records: dict, prompts: list[BenchPrompt], methods: list[Method], out_dir: Path) -> None:
    ids, labels = {p.prompt_id for p in prompts}, {m.label for m in methods}
    for prompt_id, label in records:
        if prompt_id not in ids or label not in labels:
            raise OptTreeError(f"{out_dir / 'progress.jsonl'} holds a record of {label!r} on {prompt_id!r}, which "
                               "is not in this run's grid: it belongs to another run; pick a new --out")


def _write_config(out_dir: Path, config: BenchConfig, methods: list[Method], skipped: list[str],
                  prompts: list[BenchPrompt], old: dict | None, device_name: str) -> None:
    digests = {p.prompt_id: p.digest for p in prompts}
    if old is not None:
        meta = {**old, "prompts": digests, "n_prompts": len(prompts)}
        meta.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    else:
        meta = {"config": config.to_dict(), "methods": [m.label for m in methods], "skipped": skipped,
                "n_prompts": len(prompts), "device": config.device,
                "torch_device": device_name,
                "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": package_versions(),
                "prompts": digests}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "config.json", lambda p: p.write_text(json.dumps(meta, indent=2)))


@contextlib.contextmanager
def _run_folder_lock(out_dir: Path):
    """Hold the run folder's lock (``atomic.path_lock`` on ``.NAME.lock`` beside it) for the whole run;
    a second process on the same folder stops at once, in one line."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OptTreeError(f"cannot create the run folder {out_dir}: {e}") from e
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(path_lock(out_dir, wait=False))
    except BlockingIOError:
        raise OptTreeError(f"{out_dir} is in use by another bench run (process {lock_holder(out_dir)}): "
                           "wait for it to finish or pick another --out") from None
    except OSError as e:
        raise OptTreeError(f"cannot lock the run folder {out_dir}: {e}") from e
    with stack:
        yield


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
        bench.session(method).run(ids, warm, chat=prompt.chat)


def run_bench(config: BenchConfig | str | os.PathLike | dict, out_dir: str | os.PathLike, progress: bool = True,
              on_pair: Callable[[str, str], None] | None = None, ray=None) -> RunResult:
    """Run (or resume) the benchmark grid into ``out_dir``; ``on_pair(prompt_id, method)`` after each pair.
    ``ray`` (a ``tools.ray_cluster.RayOptions``): the prompts run on Ray workers (``ray_grid.py``), this
    process writes the folder.

    Everything is checked before anything is written: the config, the prompts, for Ray the cluster's
    address, and for a resumed folder its config.json, its prompts' digests and its progress records."""
    config, out_dir = _as_config(config), Path(os.path.abspath(out_dir))
    prompts = load_prompts(config)
    with contextlib.ExitStack() as stack:
        grid = None
        if ray is not None:
            from .ray_grid import RayGrid  # Ray is imported only here

            grid = stack.enter_context(RayGrid.connect(ray, config))
        stack.enter_context(_run_folder_lock(out_dir))
        previous = _previous_run(out_dir, config, prompts)
        records = read_progress(out_dir)
        if grid is None:
            target, drafters = load_models(config)
            methods, skipped = build_methods(config, drafters)
            bench, device_name = Bench(config, target, drafters, out_dir, records), torch_device_name(config.device)
        else:
            methods, skipped, device_name = grid.start()  # each worker loads the models
            bench = Bench(config, None, {}, out_dir, records)
        _check_records(records, prompts, methods, out_dir)
        _write_config(out_dir, config, methods, skipped, prompts, previous, device_name)
        _cut_torn_line(out_dir / "progress.jsonl")
        if grid is None:  # Ray workers each name their own machine in their rows
            here = describe_machine(config.device)
            elsewhere = part_run_elsewhere(bench.records, [p.prompt_id for p in prompts], len(methods), here)
            bench.records = set_aside(out_dir, bench.records, elsewhere, here)
        for reason in skipped:
            print(f"bench: skipped {reason}", file=sys.stderr)
        resumed = len(bench.records)
        ran = (_run_grid if grid is None else grid.run)(bench, methods, prompts, progress, on_pair)
        results = _write_results(out_dir, bench.records)
        summary = write_summary(out_dir, results)
    return RunResult(out_dir, results, summary, skipped, ran, resumed)


def load_models(config: BenchConfig) -> tuple:
    """The target and the drafters by name (the calls a Ray worker makes too)."""
    target = load_model(config.target, device=config.device, dtype=config.dtype)
    drafters = {name: load_drafter(name, target, draft_vocab=config.draft_vocab if resolve_manifest(name) else None,
                                   device=config.device, dtype=config.dtype) for name in config.drafters}
    return target, drafters


def torch_device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device.startswith("cuda") else device


def unfinished(bench: Bench, methods: list[Method], prompts: list[BenchPrompt]) -> list[tuple[int, BenchPrompt]]:
    """(index, prompt) of every prompt with a pair not yet in ``bench.records``, in order."""
    return [(i, p) for i, p in enumerate(prompts) if any((p.prompt_id, m.label) not in bench.records for m in methods)]


def run_prompt(bench: Bench, methods: list[Method], i: int, prompt: BenchPrompt,
               done: Callable[[PairOutput], None]) -> None:
    """Every unfinished pair of prompt ``i``, the method order rotated by ``i`` (AR among them), each
    handed to ``done`` as it finishes."""
    for method in methods[i % len(methods):] + methods[:i % len(methods)]:
        if (prompt.prompt_id, method.label) not in bench.records:
            done(run_pair(bench, method, prompt))


def commit_pair(bench: Bench, pair: PairOutput) -> None:
    """Write one finished pair into the run folder: its tree log (if any), then its progress line, so
    a pair in progress.jsonl always has its log."""
    row = pair.record["row"]
    if pair.log is not None:
        write_log(bench.out_dir / row["log_dir"], pair.log)
    _append_progress(bench.out_dir, pair.record)
    bench.records[(row["prompt_id"], row["method"])] = pair.record


def _run_grid(bench: Bench, methods: list[Method], prompts: list[BenchPrompt], progress: bool, on_pair) -> int:
    """Every unfinished pair, prompt by prompt (the method order rotated per prompt); returns how many ran.
    results.parquet is rewritten after each prompt, and on the way out of an interruption."""
    todo, before = unfinished(bench, methods, prompts), len(bench.records)
    with pair_bar(progress, len(prompts) * len(methods), before) as tick:

        def done(pair: PairOutput) -> None:
            commit_pair(bench, pair)
            tick(pair.record["row"], on_pair)

        if todo:
            _warm_up(bench, methods, todo[0][1])
        for i, prompt in todo:
            try:
                run_prompt(bench, methods, i, prompt, done)
            finally:
                _write_results(bench.out_dir, bench.records)
    return len(bench.records) - before


@contextlib.contextmanager
def pair_bar(progress: bool, total: int, done: int):
    """A ``tick(row, on_pair)`` to call after each committed pair: the progress bar (if shown), then ``on_pair``."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=done, unit="pair", desc="bench")

    def tick(row: dict, on_pair) -> None:
        if bar is not None:
            bar.update(1)
        if on_pair is not None:
            on_pair(row["prompt_id"], row["method"])
    try:
        yield tick
    finally:
        if bar is not None:
            bar.close()


def quick_bench(target: str, drafter: str, policy: str, budgets, texts, max_new_tokens: int) -> pd.DataFrame:
    """A small greedy grid for a notebook's speed lines: ``policy`` at each budget and AR, interleaved
    prompt by prompt over ``texts`` after a warm-up, in a fresh temporary run folder; its results."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="opttree-quick-bench-"))
    (folder / "prompts.txt").write_text("\n".join(texts) + "\n")
    return run_bench({"target": target, "drafters": [drafter], "policies": [policy], "budgets": list(budgets),
                      "temperatures": [0.0], "max_new_tokens": max_new_tokens, "peers": ["ar"],
                      "datasets": [{"kind": "prompts", "path": str(folder / "prompts.txt")}]}, folder / "run",
                     progress=False).results
