"""A small deterministic training loop with resumable checkpoints.

The batch order of epoch e is a permutation seeded by (seed, e); the noise generator's
state, the optimiser state and the step are checkpointed, so resuming from a checkpoint
reaches the same weights as an uninterrupted run of the same length. A wall-clock guard
(``max_seconds``) stops cleanly after the step in flight and saves a checkpoint, so a run
with a hard time limit never loses its work; the schedule still spans all epochs.
"""
from __future__ import annotations

import math
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ...atomic import write_atomic
from ...errors import OptTreeError
from .data import Sequence
from .recipes import Batch, trainable_parameters


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 4
    lr: float = 5e-4
    batch_size: int = 8
    seed: int = 0
    warmup_steps: int = 50
    grad_clip: float = 0.5
    checkpoint_every: int = 100
    max_len: int = 512
    max_steps: int | None = None  # stop after this many steps; the schedule still spans all epochs
    max_seconds: float | None = None  # stop after the step that passes this many seconds of this call


def planned_steps(n_sequences: int, config: TrainConfig) -> int:
    """Length of the learning-rate schedule: ceil(n / batch_size) steps per epoch × epochs."""
    return math.ceil(n_sequences / config.batch_size) * config.epochs


def make_batch(sequences: list[Sequence], features: list[torch.Tensor], index: list[int], max_len: int,
               device) -> Batch:
    width = min(max_len, max(len(sequences[i].ids) for i in index))
    hidden = features[index[0]].shape[1]
    ids = torch.zeros(len(index), width, dtype=torch.long)
    feats = torch.zeros(len(index), width, hidden, dtype=features[index[0]].dtype)
    mask = torch.zeros(len(index), width, dtype=torch.bool)
    for row, i in enumerate(index):
        n = min(width, len(sequences[i].ids))
        ids[row, :n] = torch.tensor(sequences[i].ids[:n])
        feats[row, :n] = features[i][:n]
        mask[row, max(sequences[i].n_prompt - 1, 0):n] = True
    return Batch(ids.to(device), feats.to(device), mask.to(device))


def epoch_batches(n: int, config: TrainConfig, epoch: int) -> list[list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 1000 + epoch)).tolist()
    return [order[i:i + config.batch_size] for i in range(0, n, config.batch_size)]


def learning_rate(step: int, total: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _save_checkpoint(path: Path, recipe, optimizer, gen, step: int, history: list) -> None:
    state = {"step": step, "own_state": recipe.own_state(), "optimizer": optimizer.state_dict(),
             "gen_state": gen.get_state(), "history": history}
    write_atomic(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict:
    """A resumable state ``_save_checkpoint`` wrote: tensors, numbers, strings, lists and dicts only,
    loaded with ``weights_only=True``, so a planted file cannot run code; anything else is one line."""
    try:
        state = torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise OptTreeError(f"{path} is not a training checkpoint this trainer wrote (it holds more than tensors and "
                           f"plain values, or is damaged): delete it to start the run over") from e
    if not isinstance(state, dict) or not {"step", "own_state", "optimizer", "gen_state", "history"} <= set(state):
        raise OptTreeError(f"{path} is not a training checkpoint this trainer wrote: delete it to start the run over")
    return state


def train(recipe, sequences: list[Sequence], features: list[torch.Tensor], config: TrainConfig,
          checkpoint: Path | None = None, progress: bool = True, on_epoch=None) -> list[dict]:
    """Train ``recipe.model``; returns the per-step history (step, epoch, loss, tokens, seconds, metrics).

    ``seconds`` is the training time summed over all calls (resumes) up to that step. The run
    stops early at ``config.max_steps`` or after the step that passes ``config.max_seconds``;
    the returned history then ends before ``planned_steps``.
    """
    device = next(recipe.model.parameters()).device
    params = trainable_parameters(recipe.model)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    gen = torch.Generator(device=device).manual_seed(config.seed)  # noise drawn where the batch lives
    per_epoch = math.ceil(len(sequences) / config.batch_size)
    total = planned_steps(len(sequences), config)  # the learning-rate schedule's length
    stop = total if config.max_steps is None else min(config.max_steps, total)
    step, history = 0, []
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint)
        recipe.load_own_state(state["own_state"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["gen_state"])
        step, history = state["step"], state["history"]
    recipe.model.train()
    bar = tqdm(total=stop, initial=step, desc=f"train {recipe.kind}", disable=not progress)
    tokens = history[-1]["tokens"] if history else 0
    before, start = (history[-1].get("seconds", 0.0) if history else 0.0), time.monotonic()
    while step < stop:
        epoch, within = divmod(step, per_epoch)
        index = epoch_batches(len(sequences), config, epoch)[within]
        batch = make_batch(sequences, features, index, config.max_len, device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total, config)
        loss, metrics = recipe.loss(batch, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        step += 1
        tokens += int(batch.mask.sum())
        elapsed = time.monotonic() - start
        history.append({"step": step, "epoch": epoch, "loss": loss.item(), "tokens": tokens,
                        "time": time.time(), "seconds": before + elapsed, **metrics})
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", top1=f"{metrics.get('top1', 0):.2f}")
        out_of_time = config.max_seconds is not None and elapsed >= config.max_seconds
        if checkpoint is not None and (step % config.checkpoint_every == 0 or step == stop or out_of_time):
            _save_checkpoint(checkpoint, recipe, optimizer, gen, step, history)
        if on_epoch is not None and step % per_epoch == 0:
            on_epoch(epoch, history)
        if out_of_time:
            break
    bar.close()
    recipe.model.eval()
    return history
