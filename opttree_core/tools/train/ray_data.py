"""Self-distillation data made by Ray workers in shards (``train ... --ray [ADDRESS]``); imported only then.

A worker is a Ray actor (``DataWorker``) that loads the target once (``models.load_model``) and answers
or featurises one shard per task with the single-process code (``data._generate_batch``,
``data.feature_rows``). A shard is a contiguous slice of the prompts in asking order (shortest first,
``self_distill``) or of the sequences, ``--shard-batches`` batches long, so its batches are the
batches one process makes and the files come out byte for byte the same for the same seed and
shard plan.

The driver alone writes, atomically (``atomic.write_atomic``). A finished shard is recorded as a file
of its own beside the cache: ``<answers file>.shards/<start>-<end>.json`` (its answers, with the
cache's made-from record) and ``<features file>.shards/<start>-<end>.pt`` (its features, with the
sha256 of its sequences' ids). Answers are then appended to the answers file in order, through
``self_distill``'s own loop, as soon as every shard before them is in, and their shard file removed;
the features file is written whole once every shard is in. A rerun skips every shard already in the
cache or in a shard file, so a finished shard is never redone; a shard file that does not fit (another
target, prompts, cap) is refused in one line, as the cache itself is (``cache.py``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import ray
import torch

from ...atomic import write_atomic
from ...errors import OptTreeError
from ...models import load_model
from ..ray_cluster import RayOptions, actor_options, get, ray_session, worker_count, worker_device
from .data import Sequence, _generate_batch, feature_rows


@ray.remote(concurrency_groups={"info": 1})
class DataWorker:
    """One worker: the target loaded once; one shard of answers or features per task."""

    def __init__(self, target: str, device: str, threads: int):
        torch.set_num_threads(threads)
        self.target = load_model(target, device=worker_device(device))

    @ray.method(concurrency_group="info")
    def pid(self) -> int:
        return os.getpid()

    def answers(self, asked: list[list[int]], max_new_tokens: int, batch_size: int) -> list[list[int]]:
        return [answer for begin in range(0, len(asked), batch_size)
                for answer in _generate_batch(self.target, asked[begin:begin + batch_size], max_new_tokens)]

    def features(self, sequences: list[Sequence], batch_size: int, layers) -> list[torch.Tensor]:
        return feature_rows(self.target, sequences, batch_size, layers)


def shard_dir(path: Path) -> Path:
    return path.with_name(f"{path.name}.shards")


def _ids_digest(sequences: list[Sequence]) -> str:
    return hashlib.sha256(json.dumps([s.ids for s in sequences]).encode()).hexdigest()


class RayData:
    """The driver's side: workers on the cluster, shards handed out, shard files written as they return."""

    def __init__(self, options: RayOptions, target: str, device: str, shard_batches: int):
        self.options, self.target, self.device, self.shard_batches = options, target, device, shard_batches
        self.workers, self.actors, self.submitted = worker_count(options, device), [], 0

    @classmethod
    @contextlib.contextmanager
    def connect(cls, options: RayOptions, target: str, device: str, shard_batches: int) -> Iterator[RayData]:
        """The cluster connected (a bad address: one line, before anything is written); workers killed on the way out."""
        with ray_session(options):
            data = cls(options, target, device, shard_batches)
            try:
                yield data
            finally:
                for actor in data.actors:
                    ray.kill(actor)

    def _actor(self, k: int):
        """The k-th worker (round robin), started on first use: it loads the target."""
        while len(self.actors) < min(self.workers, k + 1):
            name = f"opttree-data-{os.getpid()}-{len(self.actors)}"
            self.actors.append(DataWorker.options(**actor_options(self.options, self.device, name)).remote(
                self.target, self.device, self.options.threads))
        return self.actors[k % self.workers]

    def _plan(self, n: int, start: int, batch_size: int) -> list[tuple[int, int]]:
        """The shards (start, end) of positions ``start..n``: fixed boundaries every shard_batches batches."""
        size = self.shard_batches * batch_size
        return [(max(k, start), min(k + size, n)) for k in range(0, n, size) if min(k + size, n) > start]

    def _run(self, todo: list[tuple[int, int]], submit, done) -> None:
        """``submit(actor, start, end)`` for each shard, ``done(start, end, output)`` as each returns."""
        refs = {}
        for j, (start, end) in enumerate(todo):
            refs[submit(self._actor(j), start, end)] = (start, end)
            self.submitted += 1
        while refs:
            ray.wait(list(refs), num_returns=1)
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
            for ref in sorted(ready, key=list(refs).index):  # the earliest submitted first: one worker saves in order
                start, end = refs.pop(ref)
                done(start, end, get(ref, f"on the shard {start}-{end}"))

    def answers(self, path: Path, record: dict, asked: list[list[int]], start: int, max_new_tokens: int,
                batch_size: int) -> Iterator[tuple[range, list[list[int]]]]:
        """(positions, answers) batch by batch from ``start``, in order (``self_distill`` writes them)."""
        folder, plan = shard_dir(path), self._plan(len(asked), start, batch_size)
        record, files = json.loads(json.dumps(record)), _shard_files(folder, start)
        have = {s: _read_answers(files[e][1], record)[s - files[e][0]:] for s, e in plan
                if e in files and files[e][0] <= s}

        def save(s: int, e: int, answers: list) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"made_from": record, "answers": answers})
            write_atomic(folder / f"{s}-{e}.json", lambda tmp: tmp.write_text(text))
            have[s] = answers

        todo = [(s, e) for s, e in plan if s not in have]
        refs = {self._actor(j).answers.remote(asked[s:e], max_new_tokens, batch_size): (s, e)
                for j, (s, e) in enumerate(todo)}
        self.submitted += len(refs)
        for s, e in plan:  # in order: wait for the shard, then hand out its batches
            while s not in have:
                [ref], _ = ray.wait(list(refs), num_returns=1)
                done = refs.pop(ref)
                save(*done, get(ref, f"answering prompts {done[0]}-{done[1]}"))
            for begin in range(s, e, batch_size):
                positions = range(begin, min(begin + batch_size, e))
                yield positions, have[s][begin - s:positions.stop - s]
            for shard in folder.glob(f"*-{e}.json"):  # its answers are in the answers file now
                shard.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()

    def features(self, path: Path, sequences: list[Sequence], batch_size: int, layers) -> list[torch.Tensor]:
        """Every sequence's features, shard by shard (each kept in a shard file until the whole file is written)."""
        folder, shards = shard_dir(path), {}
        for s, e in self._plan(len(sequences), 0, batch_size):
            shards[s] = _read_features(folder / f"{s}-{e}.pt", sequences[s:e])

        def save(s: int, e: int, rows: list) -> None:
            folder.mkdir(parents=True, exist_ok=True)
            payload = {"ids_sha256": _ids_digest(sequences[s:e]), "features": rows}
            write_atomic(folder / f"{s}-{e}.pt", lambda tmp: torch.save(payload, tmp))
            shards[s] = rows

        todo = [(s, e) for s, e in self._plan(len(sequences), 0, batch_size) if shards[s] is None]
        self._run(todo, lambda actor, s, e: actor.features.remote(sequences[s:e], batch_size, layers), save)
        return [row for s in sorted(shards) for row in shards[s]]

    def forget_shards(self, path: Path) -> None:
        """The features file is written: its shard files go."""
        folder = shard_dir(path)
        if folder.is_dir():
            for shard in folder.glob("*.pt"):
                shard.unlink()
            with contextlib.suppress(OSError):
                folder.rmdir()


def _shard_files(folder: Path, start: int) -> dict[int, tuple[int, Path]]:
    """The answer shard files, end → (start, path); those whose answers are all in the answers file
    already (a run stopped between the append and the removal) are removed. A run stopped part way
    through appending a shard resumes from the middle of its file."""
    files = {}
    for shard in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        s, _, e = shard.stem.partition("-")
        if not (s.isdigit() and e.isdigit()):
            continue
        if int(e) <= start:
            shard.unlink()
        else:
            files[int(e)] = (int(s), shard)
    return files


def _read_answers(path: Path, record: dict) -> list[list[int]]:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise OptTreeError(f"cannot read the shard file {path} ({e}): delete it to answer its prompts again") from e
    if not isinstance(saved, dict) or saved.get("made_from") != record:
        raise OptTreeError(f"{path} holds answers made from other settings (another target, cap or prompts): "
                           "use another --data directory, or delete it")
    return saved["answers"]


def _read_features(path: Path, sequences: list[Sequence]) -> list[torch.Tensor] | None:
    """A shard file's features if it holds these sequences' (None: compute the shard)."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError):
        return None
    if isinstance(saved, dict) and saved.get("ids_sha256") == _ids_digest(sequences):
        return saved["features"]
    return None
