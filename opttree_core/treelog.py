"""TreeLog: every step's tree, kept on the model's device, exported to Parquet.

Recording writes into preallocated tensors with host-known indices only, so it adds no host
synchronisation to the decoding loop. Export (off the hot path) writes the files of
``records.py`` (``nodes.parquet``, ``steps.parquet``, ``meta.json``) into one directory.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .records import NODE_COLUMNS, STEP_COLUMNS, TEXT_COLUMNS, LogData, StepRecord, read_log, write_log

# name → dtype of the on-device buffer, shape (capacity_steps, max_nodes): the node columns of the
# log's schema (``records.NODE_COLUMNS``) but the two the export adds (``step``, ``node``)
NODE_FIELDS = {name: getattr(torch, dtype) for name, dtype in NODE_COLUMNS.items() if name not in ("step", "node")}
HOST_FIELDS = ("n_nodes", "a", "bonus_token", "draft_s", "verify_s", "build_s")

TreeLogData = LogData  # what ``to_frames`` and ``load`` return


class TreeLog:
    """Preallocated on-device record of the trees of one decoding run."""

    def __init__(self, max_steps: int, max_nodes: int, device="cpu", meta: dict | None = None):
        self.device, self.meta = torch.device(device), dict(meta or {})
        self.max_nodes, self.n_steps = max_nodes, 0
        self.nodes = {k: torch.zeros(max_steps, max_nodes, dtype=t, device=self.device) for k, t in NODE_FIELDS.items()}
        self.ea = torch.zeros(max_steps, dtype=torch.float32, device=self.device)
        self.host = {k: np.zeros(max_steps, dtype=STEP_COLUMNS[k]) for k in HOST_FIELDS}

    @property
    def capacity(self) -> int:
        return self.ea.shape[0]

    def _grow(self) -> None:
        self.nodes = {k: torch.cat([v, torch.zeros_like(v)]) for k, v in self.nodes.items()}
        self.ea = torch.cat([self.ea, torch.zeros_like(self.ea)])
        self.host = {k: np.concatenate([v, np.zeros_like(v)]) for k, v in self.host.items()}

    def record(self, record: StepRecord) -> None:
        """Append one step. Tensors stay on the device; only host-known values go to the host arrays."""
        tree, n, step = record.tree, record.tree.n_nodes, self.n_steps
        if n > self.max_nodes:
            raise ValueError(f"tree of {n} nodes exceeds the log's {self.max_nodes}")
        if step == self.capacity:
            self._grow()
        values = {"token": tree.tokens, "parent": tree.parents, "depth": tree.depth, "p_hat": tree.p_hat,
                  "q": tree.q, "rank": tree.rank, "target_token": record.target_tokens, "accepted": record.accepted}
        for key, value in values.items():
            self.nodes[key][step, :n] = value.to(self.device, non_blocking=True)
        self.ea[step] = tree.expected_acceptance().to(self.device)
        for key, value in (("n_nodes", n), ("a", record.a), ("bonus_token", record.new_tokens[-1]),
                           ("draft_s", record.draft_s), ("verify_s", record.verify_s), ("build_s", record.build_s)):
            self.host[key][step] = value
        self.n_steps += 1

    def nbytes(self) -> int:
        """Bytes held by the on-device buffers."""
        return sum(v.numel() * v.element_size() for v in self.nodes.values()) + self.ea.numel() * 4

    def to_frames(self, tokenizer=None) -> LogData:
        steps = pd.DataFrame({k: v[: self.n_steps] for k, v in self.host.items()})
        steps.insert(0, "step", np.arange(self.n_steps, dtype=np.int32))
        steps["ea"] = self.ea[: self.n_steps].cpu().numpy()
        valid = np.arange(self.max_nodes)[None, :] < steps["n_nodes"].to_numpy()[:, None]  # (steps, max_nodes)
        step_idx, node_idx = np.nonzero(valid)
        nodes = pd.DataFrame({"step": step_idx.astype(np.int32), "node": node_idx.astype(np.int32)})
        for key, buf in self.nodes.items():
            nodes[key] = buf[: self.n_steps].cpu().numpy()[valid]
        if tokenizer is not None:  # every token's text, so the log renders without a tokenizer
            for frame, columns in ((nodes, TEXT_COLUMNS["nodes"]), (steps, TEXT_COLUMNS["steps"])):
                for text, ids in columns.items():
                    frame[text] = token_texts(tokenizer, frame[ids].to_numpy())
        return LogData(nodes=nodes, steps=steps, meta=dict(self.meta))

    def save(self, path: str | os.PathLike, tokenizer=None) -> Path:
        """Write the log directory atomically (``records.write_log``): only a missing path, an empty
        directory or an earlier tree log is replaced, whole; returns the absolute path."""
        return write_log(Path(path), self.to_frames(tokenizer))

    @staticmethod
    def load(path: str | os.PathLike) -> LogData:
        return read_log(path)


def token_texts(tokenizer, token_ids: np.ndarray) -> list[str]:
    """Decoded text of each token id (each distinct id decoded once; "" for a negative placeholder id)."""
    unique = np.unique(token_ids)
    text = {int(t): tokenizer.decode([int(t)]) if t >= 0 else "" for t in unique}
    return [text[int(t)] for t in token_ids]


def step_log(record: StepRecord, tokenizer=None, meta: dict | None = None) -> LogData:
    """The log of one step (a tree verified by hand, as notebook 2 does), as frames."""
    log = TreeLog(max_steps=1, max_nodes=record.tree.n_nodes, device=record.tree.device, meta=meta)
    log.record(record)
    return log.to_frames(tokenizer)
