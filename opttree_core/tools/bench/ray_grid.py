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
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import ray
import torch

from ...errors import OptTreeError
from .config import BenchConfig, BenchPrompt, turn_id
from .methods import Bench, Method, _t, build_methods
from .run import _warm_up, _write_results, commit_pair, load_models, pair_bar, run_prompt, torch_device_name, unfinished

RETRIES = 3  # restarts of a killed worker, and runs again of the task it was running


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray cluster on this machine's cores
    workers: int | None = None  # None: the cluster's CPUs // threads (its GPUs when the device is cuda), >= 1
    threads: int = 1  # torch threads of each worker (torch.set_num_threads), so workers do not oversubscribe
    num_cpus: int | None = None  # the local cluster's CPUs (None: os.cpu_count()); not with an address


def check_address(address: str) -> None:
    """A one-line OptTreeError unless ``HOST:PORT`` (or ``ray://HOST:PORT``) accepts a TCP connection;
    ``auto`` (the cluster ``ray start`` left on this machine) is left to Ray. ``ray.init`` itself
    retries an unreachable address for about two minutes."""
    if address == "auto":
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not host or not port.isdigit():
        raise OptTreeError(f"--ray {address!r}: give the head node's address as HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise OptTreeError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                           "'ray start --head' or check the address") from None


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


@contextlib.contextmanager
def _ray_session(options: RayOptions) -> Iterator[None]:
    """Connect to (or start) the cluster; shut the connection down on the way out if this call made it."""
    if options.address is not None:
        check_address(options.address)
    if ray.is_initialized():  # a caller (a test, a notebook) already holds a connection: use it
        yield
        return
    try:
        if options.address is None:
            ray.init(num_cpus=options.num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=options.address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise OptTreeError(f"--ray {options.address or '(local)'}: cannot start Ray: {_first_line(e)}") from None
    try:
        yield
    finally:
        ray.shutdown()


def worker_count(options: RayOptions, config: BenchConfig) -> int:
    """``options.workers``, else what the cluster holds: its GPUs (cuda) or its CPUs // threads, at least 1."""
    resources = ray.cluster_resources()
    if config.device.startswith("cuda"):
        gpus = int(resources.get("GPU", 0))
        if gpus < 1:
            raise OptTreeError(f"the config's device is {config.device}, but the Ray cluster has no GPU: "
                               "start its nodes on GPU machines, or set device = \"cpu\"")
        return options.workers or gpus
    return options.workers or max(1, int(resources.get("CPU", 1)) // options.threads)


@ray.remote(concurrency_groups={"info": 1})
class BenchWorker:
    """One worker: the models loaded once, one prompt's methods per task."""

    def __init__(self, config: BenchConfig, threads: int):
        torch.set_num_threads(threads)
        if config.device.startswith("cuda"):  # Ray gives the actor one GPU, visible as cuda:0
            config = dataclasses.replace(config, device="cuda")
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
        self.workers = worker_count(options, config)

    @classmethod
    @contextlib.contextmanager
    def connect(cls, options: RayOptions, config: BenchConfig) -> Iterator[RayGrid]:
        """The cluster connected (a bad address: one line, before anything is written); its workers
        are killed on the way out."""
        with _ray_session(options):
            grid = cls(options, config)
            try:
                yield grid
            finally:
                for actor in grid.actors:
                    ray.kill(actor)

    def _new_actor(self):
        gpus = 1 if self.config.device.startswith("cuda") else 0
        name = f"opttree-bench-{os.getpid()}-{len(self.actors)}"  # what a test finds a worker by
        actor = BenchWorker.options(name=name, num_cpus=self.options.threads, num_gpus=gpus, max_restarts=RETRIES,
                                    max_task_retries=RETRIES).remote(self.config, self.options.threads)
        self.actors.append(actor)
        return actor

    def start(self) -> tuple[list[Method], list[str], str]:
        """The first worker: its models loaded, the method grid, the skipped peers and the device's name."""
        return self._get(self._new_actor().describe.remote(), "starting the first worker")

    def _get(self, ref, what: str):
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            if isinstance(e.cause, OptTreeError):
                raise OptTreeError(str(e.cause)) from None
            raise
        except ray.exceptions.RayActorError as e:
            raise OptTreeError(f"a Ray worker died {RETRIES + 1} times {what} ({_first_line(e)}): the pairs "
                               "written so far are kept; rerun the same command to resume") from None

    def run(self, bench: Bench, methods: list[Method], prompts: list[BenchPrompt], progress: bool, on_pair) -> int:
        """Every unfinished prompt as a task on a free worker; each task's pairs written as it returns,
        then results.parquet. Returns how many pairs ran."""
        todo, busy, ran = unfinished(bench, methods, prompts), {}, 0
        idle = list(self.actors) + [self._new_actor() for _ in range(min(self.workers, len(todo)) - len(self.actors))]
        with pair_bar(progress, len(prompts) * len(methods), len(bench.records)) as tick:
            while todo or busy:
                while idle and (k := self._ready(bench, todo)) is not None:
                    i, prompt = todo.pop(k)
                    actor = idle.pop(0)
                    busy[actor.run_prompt.remote(i, prompt, self._records_for(bench, prompt))] = (actor, prompt)
                if not busy:
                    raise OptTreeError(f"{todo[0][1].prompt_id}: its earlier turns are not in the run")
                [ref], _ = ray.wait(list(busy), num_returns=1)
                actor, prompt = busy.pop(ref)
                pairs = self._get(ref, f"running {prompt.prompt_id}")
                idle.append(actor)
                try:
                    for pair in pairs:
                        commit_pair(bench, pair)
                        ran += 1
                        tick(pair.record["row"], on_pair)
                finally:
                    _write_results(bench.out_dir, bench.records)
        return ran

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
