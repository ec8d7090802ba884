"""Reading tree logs: one step's nodes and numbers, token texts, run and group names.

A log is anything with ``nodes`` and ``steps`` DataFrames and a ``meta`` dict, as
``opttree_core.records.read_log`` returns (``LogData``: the one log schema, torch-free, shared
with the engine). Node 0 of each step is the
root (the last committed token); the accepted non-root nodes form one path of length
A − 1; the bonus token (``steps.bonus_token``) is the target's own token after the last
accepted node and is not a node of the tree.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from opttree_core.errors import OptTreeError
from opttree_core.records import META_FIELDS, TEXT_COLUMNS, read_log

WHITESPACE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


@dataclass(frozen=True)
class StepInfo:
    """The numbers of one decoding step (``build_s`` only when the log has that column)."""

    step: int
    n_nodes: int
    a: int
    ea: float
    bonus_token: int
    draft_s: float
    verify_s: float
    build_s: float | None = None


META_READ = ("policy", "policy_config", "prompt", "target", "draft", "token_ids", "draft_vocab")  # what treeviz
# reads from a meta.json; their JSON types are the log schema's (``opttree_core.records.META_FIELDS``)


def load_log(path: str | os.PathLike):
    """A saved tree log, read by the engine's one reader (``opttree_core.records.read_log``; no torch),
    and checked for what treeviz draws from it: a one-line OptTreeError naming the file otherwise."""
    data = read_log(path)
    check_log(data, Path(path))
    return data


def check_log(data, where: Path) -> None:
    """Meta values of the right types (``META_FIELDS``); every node row in a logged step, a root per step."""
    meta = where / "meta.json"
    for key in META_READ:
        kind, value = META_FIELDS[key], data.meta.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise OptTreeError(f"{meta}: {key!r} must be a JSON {kind.__name__}, not {type(value).__name__}")
    for key, value in (data.meta.get("policy_config") or {}).items():
        if key in ("nodes", "length") and (not isinstance(value, int) or isinstance(value, bool)):
            raise OptTreeError(f"{meta}: policy_config.{key} must be an integer, not {value!r}")
    steps = set(range(len(data.steps)))
    logged = set(data.nodes["step"].astype(int))
    roots = set(data.nodes.loc[data.nodes["node"] == 0, "step"].astype(int))
    if not logged <= steps or roots != steps:
        bad = sorted((logged - steps) | (steps ^ roots))[0]
        raise OptTreeError(f"{where / 'nodes.parquet'} does not match {where / 'steps.parquet'}: step {bad} "
                           "has nodes without a step row, or no root node")


def unique_labels(paths: Iterable[str | os.PathLike]) -> list[str]:
    """A short label per path, unique among them: the directory name, or as many trailing path parts
    as it takes to tell two apart (``chain/p0`` and ``opt-tree/p0``, not two ``p0``)."""
    parts = [Path(os.path.abspath(os.fspath(p))).parts for p in paths]
    depth = {i: 1 for i in range(len(parts))}
    while True:
        labels = ["/".join(ps[-depth[i]:]) for i, ps in enumerate(parts)]
        clashes = {i for i, label in enumerate(labels) if labels.count(label) > 1 and depth[i] < len(parts[i])}
        if not clashes:
            return labels
        for i in clashes:
            depth[i] += 1


def load_logs(paths: Iterable[str | os.PathLike]) -> dict[str, object]:
    """Several logs, keyed by a unique label each (``unique_labels``: their directory names when
    those differ); the same directory twice is an OptTreeError."""
    paths = list(paths)
    labels = unique_labels(paths)
    if len(set(labels)) < len(labels):
        twice = next(label for label in labels if labels.count(label) > 1)
        raise OptTreeError(f"the same log is given twice: {twice}")
    return {label: load_log(p) for label, p in zip(labels, paths)}


def as_named(logs) -> dict[str, object]:
    """A dict ``name → log`` from a dict, a list of logs or one log (names from meta, then index)."""
    if isinstance(logs, Mapping):
        return dict(logs)
    if hasattr(logs, "nodes"):
        logs = [logs]
    named: dict[str, object] = {}
    for i, data in enumerate(logs):
        name = run_name(data.meta, f"run{i}")
        named[name if name not in named else f"{name} #{i}"] = data
    return named


def n_steps(data) -> int:
    return len(data.steps)


def check_step(data, step: int) -> int:
    step = int(step)
    if not 0 <= step < n_steps(data):
        raise IndexError(f"step {step} is out of range: this log has {n_steps(data)} steps (0 … {n_steps(data) - 1})")
    return step


def step_nodes(data, step: int) -> pd.DataFrame:
    """The nodes of one step, ordered by node index (index reset)."""
    step = check_step(data, step)
    rows = data.nodes[data.nodes["step"] == step].sort_values("node")
    return rows.reset_index(drop=True)


def step_info(data, step: int) -> StepInfo:
    row = data.steps.iloc[check_step(data, step)]
    build = float(row["build_s"]) if "build_s" in data.steps.columns else None
    return StepInfo(step=int(row["step"]), n_nodes=int(row["n_nodes"]), a=int(row["a"]), ea=float(row["ea"]),
                    bonus_token=int(row["bonus_token"]), draft_s=float(row["draft_s"]),
                    verify_s=float(row["verify_s"]), build_s=build)


def token_text_map(data, tokenizer=None) -> dict[int, str]:
    """Token id → text, from the log's text columns (``token_text``, ``target_text``, ``bonus_text``:
    ``opttree_core.records.TEXT_COLUMNS``) and, for ids they lack, a tokenizer when given."""
    texts: dict[int, str] = {}
    for frame, columns in ((data.nodes, TEXT_COLUMNS["nodes"]), (data.steps, TEXT_COLUMNS["steps"])):
        for text, ids in columns.items():
            if text in frame.columns:
                pairs = frame[[ids, text]].drop_duplicates(ids)
                pairs = pairs[pairs[ids] >= 0]
                texts.update(zip(pairs[ids].astype(int), pairs[text].astype(str)))
    if tokenizer is not None:
        ids = set(data.nodes["token"].astype(int)) | set(data.steps["bonus_token"].astype(int))
        ids |= set(data.nodes["target_token"].astype(int))
        texts.update({t: tokenizer.decode([t]) for t in sorted(ids - texts.keys())})
    return texts


def token_text(token: int, texts: Mapping[int, str]) -> str:
    """The token's text, or ``#id`` (its id, e.g. ``#63``) when the log has no text for it: a tiny test
    model has no tokenizer."""
    return texts.get(int(token), f"#{int(token)}")


def visible(text: str, max_len: int | None = None) -> str:
    """Whitespace made visible (␣ ↵ ⇥), other control characters escaped; ∅ for empty text."""
    out = "".join(WHITESPACE.get(c, c if c.isprintable() else f"\\x{ord(c):02x}") for c in text) or "∅"
    if max_len is not None and len(out) > max_len:
        out = out[: max(1, max_len - 1)] + "…"
    return out


def run_name(meta: Mapping, fallback: str = "run") -> str:
    """A short name for a run: ``policy n=… · prompt…`` from meta, else ``fallback``."""
    policy = meta.get("policy")
    if not policy:
        return fallback
    budget = budget_of(meta)
    prompt = str(meta.get("prompt") or "")
    head = f"{policy} n={budget}" if budget is not None else str(policy)
    return f"{head} · {prompt[:24]}" if prompt else head


def group_name(meta: Mapping) -> str:
    """The draft/target pair a run belongs to, e.g. ``self → smollm2-135m``."""
    return f"{meta.get('draft', '?')} → {meta.get('target', '?')}"


def budget_of(meta: Mapping) -> int | None:
    """The node budget of a run: ``policy_config.nodes`` (or a chain's ``length``)."""
    config = meta.get("policy_config") or {}
    for key in ("nodes", "length"):
        if key in config:
            return int(config[key])
    return None


def safe_log(x: float) -> float:
    return math.log(x) if x > 0 else float("-inf")
