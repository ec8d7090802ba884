"""TreeLog: every step's tree, kept on the model's device, exported to Parquet.

Recording writes into preallocated tensors with host-known indices only, so it adds
no host synchronisation to the decoding loop. Export (off the hot path) writes, into
one directory, atomically:

    nodes.parquet   long form: one row per node per step (the root included, depth 0)
    steps.parquet   one row per step: n_nodes, E(A), A, bonus token, and seconds: draft_s (in the
                    drafter's calls), build_s (the policy's own tree building), verify_s (target);
                    logs written before build_s existed lack that column and load all the same
    meta.json       models, policy and config, prompt, seed, package versions, ...
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .errors import OptTreeError
from .metrics import expected_acceptance
from .tree import DraftTree

NODE_FIELDS = {  # name → dtype of the on-device buffer, shape (capacity_steps, max_nodes)
    "token": torch.int32, "parent": torch.int32, "depth": torch.int16, "p_hat": torch.float32,
    "q": torch.float32, "rank": torch.int16, "target_token": torch.int32, "accepted": torch.bool,
}


@dataclass(frozen=True)
class TreeLogData:
    nodes: pd.DataFrame
    steps: pd.DataFrame
    meta: dict


class TreeLog:
    """Preallocated on-device record of the trees of one decoding run."""

    def __init__(self, max_steps: int, max_nodes: int, device="cpu", meta: dict | None = None):
        self.device, self.meta = torch.device(device), dict(meta or {})
        self.max_nodes, self.n_steps = max_nodes, 0
        self.nodes = {k: torch.zeros(max_steps, max_nodes, dtype=t, device=self.device) for k, t in NODE_FIELDS.items()}
        self.ea = torch.zeros(max_steps, dtype=torch.float32, device=self.device)
        self.host = {k: np.zeros(max_steps, dtype=t) for k, t in
                     (("n_nodes", np.int32), ("a", np.int32), ("bonus_token", np.int64),
                      ("draft_s", np.float64), ("verify_s", np.float64), ("build_s", np.float64))}

    @property
    def capacity(self) -> int:
        return self.ea.shape[0]

    def _grow(self) -> None:
        self.nodes = {k: torch.cat([v, torch.zeros_like(v)]) for k, v in self.nodes.items()}
        self.ea = torch.cat([self.ea, torch.zeros_like(self.ea)])
        self.host = {k: np.concatenate([v, np.zeros_like(v)]) for k, v in self.host.items()}

    def record(self, tree: DraftTree, target_tokens: torch.Tensor, accepted: torch.Tensor,
               new_tokens: list[int], draft_s: float, verify_s: float, build_s: float = 0.0) -> None:
        """Append one step. Tensors stay on the device; only host-known values go to the host arrays."""
        n, step = tree.n_nodes, self.n_steps
        if n > self.max_nodes:
            raise ValueError(f"tree of {n} nodes exceeds the log's {self.max_nodes}")
        if step == self.capacity:
            self._grow()
        values = {"token": tree.tokens, "parent": tree.parents, "depth": tree.depth, "p_hat": tree.p_hat,
                  "q": tree.q, "rank": tree.rank, "target_token": target_tokens, "accepted": accepted}
        for key, value in values.items():
            self.nodes[key][step, :n] = value.to(self.device, non_blocking=True)
        self.ea[step] = expected_acceptance(tree.p_hat, tree.depth).to(self.device)
        for key, value in (("n_nodes", n), ("a", len(new_tokens)), ("bonus_token", new_tokens[-1]),
                           ("draft_s", draft_s), ("verify_s", verify_s), ("build_s", build_s)):
            self.host[key][step] = value
        self.n_steps += 1

    def nbytes(self) -> int:
        """Bytes held by the on-device buffers."""
        return sum(v.numel() * v.element_size() for v in self.nodes.values()) + self.ea.numel() * 4

    def to_frames(self, tokenizer=None) -> TreeLogData:
        steps = pd.DataFrame({k: v[: self.n_steps] for k, v in self.host.items()})
        steps.insert(0, "step", np.arange(self.n_steps, dtype=np.int32))
        steps["ea"] = self.ea[: self.n_steps].cpu().numpy()
        valid = np.arange(self.max_nodes)[None, :] < steps["n_nodes"].to_numpy()[:, None]  # (steps, max_nodes)
        step_idx, node_idx = np.nonzero(valid)
        nodes = pd.DataFrame({"step": step_idx.astype(np.int32), "node": node_idx.astype(np.int32)})
        for key, buf in self.nodes.items():
            nodes[key] = buf[: self.n_steps].cpu().numpy()[valid]
        if tokenizer is not None:
            nodes["token_text"] = token_texts(tokenizer, nodes["token"].to_numpy())
        return TreeLogData(nodes=nodes, steps=steps, meta=dict(self.meta))

    def save(self, path: str | os.PathLike, tokenizer=None) -> Path:
        """Write the log directory atomically; an existing log at ``path`` is replaced whole."""
        return write_log_dir(Path(path), self.to_frames(tokenizer))

    @staticmethod
    def load(path: str | os.PathLike) -> TreeLogData:
        path = Path(path)
        missing = [f for f in ("nodes.parquet", "steps.parquet", "meta.json") if not (path / f).is_file()]
        if missing:
            raise OptTreeError(f"{path} is not a tree log: missing {', '.join(missing)}")
        return TreeLogData(nodes=pd.read_parquet(path / "nodes.parquet"),
                           steps=pd.read_parquet(path / "steps.parquet"),
                           meta=json.loads((path / "meta.json").read_text()))


def token_texts(tokenizer, token_ids: np.ndarray) -> list[str]:
    """Decoded text of each token id (each distinct id decoded once)."""
    unique = np.unique(token_ids)
    text = {int(t): tokenizer.decode([int(t)]) for t in unique}
    return [text[int(t)] for t in token_ids]


def write_log_dir(path: Path, data: TreeLogData) -> Path:
    """Write into a temporary sibling directory, then swap it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        data.nodes.to_parquet(tmp / "nodes.parquet", index=False)
        data.steps.to_parquet(tmp / "steps.parquet", index=False)
        (tmp / "meta.json").write_text(json.dumps(data.meta, indent=2, default=str))
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path
