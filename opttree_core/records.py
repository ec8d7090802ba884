"""One record schema for the engine, the benchmark harness, treeviz and figures (torch-free).

- ``StepRecord``: one decoding step as ``generate`` hands it to ``TreeLog.record`` and to
  ``on_step`` callbacks (the tree, the target's tokens, what was accepted, the timings).
- The tree-log files (``LOG_FILES``; columns ``NODE_COLUMNS``, ``STEP_COLUMNS``), their reader
  ``read_log``, their writer ``write_log`` and ``check_log_destination`` (where one may go, checked
  before any decoding). A log is a directory:

      nodes.parquet   one row per node per step (node 0 is the root: the last committed token)
      steps.parquet   one row per step: n_nodes, A, bonus token, E(A), draft_s / verify_s / build_s
      meta.json       models, policy and its config, decode config, prompt, seed, versions, ...

- The benchmark's result and summary columns (``RESULT_COLUMNS``, ``SUMMARY_COLUMNS``) and the
  meta keys a log's meta.json holds (``META_FIELDS``).

Metrics (MAL, E(A), tokens/s, the pooled speedup, bootstrap intervals) are in ``metrics.py`` and
the tables built from them in ``summary.py``, both torch-free too.
"""
from __future__ import annotations

import json
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .atomic import open_files, replace_dir
from .errors import OptTreeError, json_object

LOG_FILES = ("nodes.parquet", "steps.parquet", "meta.json")
# name → numpy dtype. With a tokenizer, the text of every token is stored too (TEXT_COLUMNS), so a
# log renders fully offline; logs without them (or from before target_text / bonus_text) load all the same.
NODE_COLUMNS = {"step": "int32", "node": "int32", "token": "int32", "parent": "int32", "depth": "int16",
                "p_hat": "float32", "q": "float32", "rank": "int16", "target_token": "int32", "accepted": "bool"}
STEP_COLUMNS = {"step": "int32", "n_nodes": "int32", "a": "int32", "bonus_token": "int64", "draft_s": "float64",
                "verify_s": "float64", "build_s": "float64", "ea": "float32"}
OPTIONAL_STEP_COLUMNS = ("build_s",)  # logs written before it existed load all the same
TEXT_COLUMNS = {"nodes": {"token_text": "token", "target_text": "target_token"},  # text column → its id column
                "steps": {"bonus_text": "bonus_token"}}

# The keys of a log's meta.json (written by ``session.Session.run`` through ``api.RunInfo.to_meta``)
# and their JSON types; readers check the ones they use (``treeviz.logs``), null allowed for each.
META_FIELDS = {"target": str, "draft": str, "policy": str, "policy_config": dict, "decode_config": dict,
               "prompt": str, "chat": bool, "seed": int, "device": str, "dtype": str, "prompt_ids": list,
               "token_ids": list, "text": str, "steps": int, "mal": float, "tokens_per_s": float,
               "seconds": float, "created": str, "versions": dict, "draft_vocab": int, "latency_profile": dict}

ID_COLUMNS = ["method", "kind", "policy", "budget", "drafter", "temperature"]
RESULT_COLUMNS = ID_COLUMNS + ["dataset", "category", "prompt_id", "new_tokens", "steps", "mal", "seconds",
                               "tokens_per_s", "draft_s", "verify_s", "build_s", "expected_acceptance", "log_dir",
                               "output_matches_ar"]
# Which machine measured a bench row (``machine.describe_machine``), after RESULT_COLUMNS in a run's
# results.parquet; runs from before 2026-12-06 lack it.
MACHINE_COLUMN = "machine"
UNRECORDED_MACHINE = "a machine not recorded"  # what tables say for a row without one
SUMMARY_COLUMNS = ID_COLUMNS + ["n_prompts", "new_tokens", "mal", "tokens_per_s", "speedup", "draft_s", "verify_s",
                                "build_s", "expected_acceptance"]
AR_KIND = "ar"


@dataclass(frozen=True)
class StepRecord:
    """One verified step. ``tree`` is a ``DraftTree``; ``target_tokens`` (N,) the target's choice
    after each node and ``accepted`` (N,) bool the root and the accepted path (tensors on the
    model's device); ``new_tokens`` the tokens the step committed (A of them, the bonus last)."""

    step: int
    tree: object
    target_tokens: object
    accepted: object
    new_tokens: list[int]
    draft_s: float = 0.0  # seconds inside the drafter's calls
    verify_s: float = 0.0  # the target's pass and the acceptance
    build_s: float = 0.0  # the policy's own tree building (outside the drafter)
    features: object = field(default=None, repr=False)  # (A, hidden) the target's features along the path

    @property
    def a(self) -> int:
        return len(self.new_tokens)


@dataclass(frozen=True)
class LogData:
    """One tree log, as DataFrames (``nodes``, ``steps``) and its ``meta`` dict."""

    nodes: pd.DataFrame
    steps: pd.DataFrame
    meta: dict

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    def prefix(self, step: int) -> list[int]:
        """The token ids before ``step``: the prompt and every token the steps before it committed
        (the text ``step``'s tree was drafted from; its root is the last of them)."""
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or not 0 <= step < self.n_steps:
            raise OptTreeError(f"step must be an integer in [0, {self.n_steps - 1}], got {step!r}")
        step = int(step)
        for key in ("prompt_ids", "token_ids"):
            if not isinstance(self.meta.get(key), list):
                raise OptTreeError(f"this log's meta has no {key}: the prefix of a step cannot be rebuilt")
        committed = int(self.steps["a"].iloc[:step].sum())
        return list(self.meta["prompt_ids"]) + list(self.meta["token_ids"][:committed])


DTYPE_KINDS = {"int": "iu", "float": "fiu", "bool": "b"}  # declared dtype → numpy kinds a column may have


def _check_columns(frame: pd.DataFrame, columns: dict, optional, where: Path) -> None:
    missing = [c for c in columns if c not in frame.columns and c not in optional]
    if missing:
        raise OptTreeError(f"{where} is not a tree log's table: it lacks column(s) {', '.join(missing)}")
    for name, dtype in columns.items():
        kinds = DTYPE_KINDS[dtype.rstrip("0123456789")]
        if name in frame.columns and frame[name].dtype.kind not in kinds:
            raise OptTreeError(f"{where}: column {name} holds {frame[name].dtype}, not {dtype}")


def read_log(path: str | os.PathLike) -> LogData:
    """A tree-log directory; a missing file, a file that does not parse or a missing column is a
    one-line OptTreeError naming the file. The three files come from one and the same write, even
    while another process replaces the log (``atomic.open_files``)."""
    path = Path(path)
    try:
        files = open_files(path, LOG_FILES)
    except IsADirectoryError as e:
        raise OptTreeError(f"{path} is not a tree log: {Path(e.filename).name} is not a file") from e
    except (FileNotFoundError, NotADirectoryError) as e:
        missing = [f for f in LOG_FILES if not (path / f).is_file()] or [str(e)]
        raise OptTreeError(f"{path} is not a tree log: missing {', '.join(missing)}") from e
    with files["nodes.parquet"], files["steps.parquet"], files["meta.json"]:
        try:
            nodes, steps = pd.read_parquet(files["nodes.parquet"]), pd.read_parquet(files["steps.parquet"])
        except Exception as e:  # pyarrow raises several types for a torn or foreign file
            raise OptTreeError(f"{path} is not a readable tree log: {type(e).__name__}: {e}") from e
        meta = _parse_meta(files["meta.json"], path / "meta.json")
    _check_columns(nodes, NODE_COLUMNS, (), path / "nodes.parquet")
    _check_columns(steps, STEP_COLUMNS, OPTIONAL_STEP_COLUMNS, path / "steps.parquet")
    return LogData(nodes=nodes, steps=steps, meta=meta)


def _parse_meta(file, where: Path) -> dict:
    try:
        text = file.read()
    except OSError as e:
        raise OptTreeError(f"{where} is not readable: {e}") from e
    return json_object(text, where)


def read_log_meta(path: str | os.PathLike) -> dict:
    """A tree log's meta.json alone (its models, dtype, policy, prompt, ...), without reading its
    node and step tables; a missing or bad file is a one-line OptTreeError."""
    where = Path(path) / "meta.json"
    try:
        with open(where, "rb") as file:
            return _parse_meta(file, where)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
        raise OptTreeError(f"{path} is not a tree log: missing meta.json") from e


def _not_a_log(path: Path) -> str | None:
    """Why ``path`` may not be replaced by a tree log (None: it is missing, an empty directory or a
    directory holding exactly a tree log's files)."""
    if not os.path.lexists(path):
        return None
    if path.is_symlink() or not path.is_dir():
        return f"{path} exists and is not a tree log (it is {'a link' if path.is_symlink() else 'a file'})"
    entries = list(os.scandir(path))
    if not entries or (sorted(e.name for e in entries) == sorted(LOG_FILES)
                       and all(e.is_file(follow_symlinks=False) for e in entries)):
        return None
    names = sorted(e.name for e in entries if e.name not in LOG_FILES) or sorted(e.name for e in entries)
    return f"{path} exists and is not a tree log (it holds {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"


def _refuse_non_log(path: Path) -> None:
    problem = _not_a_log(path)
    if problem is not None:
        raise OptTreeError(f"{problem}: a tree log replaces only a missing path, an empty directory or an "
                           "earlier tree log")


def _log_path(path: str | os.PathLike) -> Path:
    """``path`` made absolute, when it is not the current directory and its nearest existing parent is a
    writable directory."""
    path = Path(os.path.abspath(path))
    cwd = Path.cwd()
    if not path.name or path == cwd or path in cwd.parents:
        raise OptTreeError(f"{path} is the current directory or holds it: name a new directory for the tree log")
    parent = path.parent
    while not os.path.lexists(parent):
        parent = parent.parent
    if not parent.is_dir():
        raise OptTreeError(f"cannot write the tree log {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OptTreeError(f"cannot write the tree log {path}: {parent} is not writable")
    return path


def check_log_destination(path: str | os.PathLike) -> Path:
    """The absolute path a tree log may be written to, checked before any work is done: ``path``
    must be missing, an empty directory or an earlier tree log, and its nearest existing parent a
    writable directory; otherwise a one-line OptTreeError."""
    path = _log_path(path)
    _refuse_non_log(path)
    return path


def _write_files(directory: Path, data: LogData) -> None:
    data.nodes.to_parquet(directory / "nodes.parquet", index=False)
    data.steps.to_parquet(directory / "steps.parquet", index=False)
    (directory / "meta.json").write_text(json.dumps(data.meta, indent=2, default=str))


def write_log(path: str | os.PathLike, data: LogData) -> Path:
    """Write a tree-log directory atomically (``atomic.replace_dir``: written beside ``path``, then
    swapped in under a per-path lock, so readers and concurrent writers see one whole log). Only a
    missing path, an empty directory or an earlier tree log is replaced; that, and a failed write
    (the earlier log then stays), is a one-line OptTreeError. Returns the absolute path."""
    path = _log_path(path)  # what is at the path is checked holding its lock, where no writer is mid-swap
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return replace_dir(path, lambda tmp: _write_files(tmp, data), check=_refuse_non_log)
    except OSError as e:
        raise OptTreeError(f"cannot write the tree log {path}: {e}") from e
