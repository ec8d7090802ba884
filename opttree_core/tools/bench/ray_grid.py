"""The benchmark grid on a Ray cluster (``bench --ray [ADDRESS]``); imported only when Ray is asked for.

A worker is a Ray actor (``BenchWorker``) that loads the target and the drafters once (``run.load_models``,
the calls the single-process run makes), warms up once, and runs one prompt's whole set of methods
per task (``run.run_prompt``: AR among them, the order rotated by the prompt's index, as in one
process), so AR and the methods it is compared with share a worker and its load. A task returns the
pairs as data (``methods.PairOutput``: the progress record and the tree log as ``LogData`` frames);
the driver alone writes the run folder (``run.commit_pair``: the log, then the progress line; then
``results.parquet``), so a run is resumable exactly as a single-process one, and either can resume
the other.

A worker killed mid-task is restarted by Ray (``max_restarts``) and its task run again
(``max_task_retries``): the driver writes a prompt's pairs only when its task returns, so nothing is
lost or written twice. Later MT-Bench turns wait for the earlier turns' AR answers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator

import ray
import torch

from ...errors import OptTreeError
from ..ray_cluster import RayOptions, actor_options, get, ray_session, worker_count, worker_device
from .config import BenchConfig, BenchPrompt, turn_id
from .methods import Bench, Method, _t, build_methods
from .run import _warm_up, _write_results, commit_pair, load_models, pair_bar, run_prompt, torch_device_name, unfinished


@ray.remote(concurrency_groups={"info": 1})
class BenchWorker:
    """One worker: the models loaded once, one prompt's methods per task."""

    def __init__(self, config: BenchConfig, threads: int):
        torch.set_num_threads(threads)
        config = dataclasses.replace(config, device=worker_device(config.device))
        target, drafters = load_models(config)
        self.bench = Bench(config, target, drafters, None, {})
        self.methods, self.skipped = build_methods(config, drafters)
        self.warm = False

    @ray.method(concurrency_group="info")
    def pid(self) -> int:
        """This worker's process id (answered while a task runs)."""
        return os.getpid()

    def describe(self) -> tuple[list[Method], list[str], str]:
        return self.methods, self.skipped, torch_device_name(self.bench.config.device)

    def run_prompt(self, i: int, prompt: BenchPrompt, records: dict) -> list:
        """Prompt ``i``'s unfinished pairs (``records``: its finished ones and earlier turns' AR answers)."""
        self.bench.records = dict(records)
        if not self.warm:
            _warm_up(self.bench, self.methods, prompt)
            self.warm = True
        pairs = []
        run_prompt(self.bench, self.methods, i, prompt, pairs.append)
        return pairs


class RayGrid:
    """The driver's side: workers started on the cluster, tasks handed out, pairs written as they return."""

    def __init__(self, options: RayOptions, config: BenchConfig):
        self.options, self.config, self.actors = options, config, []
        self.workers = worker_count(options, config.device)

    @classmethod
    @contextlib.contextmanager
    def connect(cls, options: RayOptions, config: BenchConfig) -> Iterator[RayGrid]:
        """The cluster connected (a bad address: one line, before anything is written); its workers
        are killed on the way out."""
        with ray_session(options):
            grid = cls(options, config)
            try:
                yield grid
            finally:
                for actor in grid.actors:
                    ray.kill(actor)

    def _new_actor(self):
        name = f"opttree-bench-{os.getpid()}-{len(self.actors)}"  # what a test finds a worker by
        actor = BenchWorker.options(**actor_options(self.options, self.config.device, name)).remote(
            self.config, self.options.threads)
        self.actors.append(actor)
        return actor

    def start(self) -> tuple[list[Method], list[str], str]:
        """The first worker: its models loaded, the method grid, the skipped peers and the device's name."""
        return get(self._new_actor().describe.remote(), "starting the first worker")

    def run(self, bench: Bench, methods: list[Method], prompts: list[BenchPrompt], progress: bool, on_pair) -> int:
        """Every unfinished prompt as a task on a free worker; each task's pairs written as it returns
        (the worker already on its next prompt), then results.parquet. Returns how many pairs ran."""
        todo, busy, ran = unfinished(bench, methods, prompts), {}, 0
        idle = list(self.actors) + [self._new_actor() for _ in range(min(self.workers, len(todo)) - len(self.actors))]
        with pair_bar(progress, len(prompts) * len(methods), len(bench.records)) as tick:
            while todo or busy:
                self._hand_out(bench, todo, idle, busy)
                if not busy:
                    raise OptTreeError(f"{todo[0][1].prompt_id}: its earlier turns are not in the run")
                [ref], _ = ray.wait(list(busy), num_returns=1)
                actor, prompt = busy.pop(ref)
                pairs = get(ref, f"running {prompt.prompt_id}")
                idle.append(actor)
                self._hand_out(bench, todo, idle, busy)
                try:
                    for pair in pairs:
                        commit_pair(bench, pair)
                        ran += 1
                        tick(pair.record["row"], on_pair)
                finally:
                    _write_results(bench.out_dir, bench.records)
        return ran

    def _hand_out(self, bench: Bench, todo: list, idle: list, busy: dict) -> None:
        """Each idle worker its next prompt whose earlier turns' AR answers are written."""
        while idle and (k := self._ready(bench, todo)) is not None:
            i, prompt = todo.pop(k)
            actor = idle.pop(0)
            busy[actor.run_prompt.remote(i, prompt, self._records_for(bench, prompt))] = (actor, prompt)

    def _earlier_ar(self, prompt: BenchPrompt) -> list[tuple[str, str]]:
        """The (prompt_id, AR label) pairs a later turn's conversation is made of."""
        base = prompt.prompt_id.rsplit("-turn", 1)[0]
        return [(turn_id(base, k), f"ar {_t(t)}") for k in range(prompt.turn) for t in self.config.temperatures]

    def _ready(self, bench: Bench, todo: list) -> int | None:
        """The index in ``todo`` of the first prompt whose earlier turns' AR answers are written."""
        return next((k for k, (_, p) in enumerate(todo)
                     if all(key in bench.records for key in self._earlier_ar(p))), None)

    def _records_for(self, bench: Bench, prompt: BenchPrompt) -> dict:
        keys = [key for key in bench.records if key[0] == prompt.prompt_id] + self._earlier_ar(prompt)
        return {key: bench.records[key] for key in keys}
