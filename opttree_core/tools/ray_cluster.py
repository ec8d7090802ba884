"""The Ray connection ``bench --ray`` and ``train data --ray`` share (imported only when Ray is asked for).

``--ray`` alone starts a local cluster on this machine's cores; ``--ray HOST:PORT`` joins the cluster
``ray start --head`` made there (the address is checked with one TCP connection first: ``ray.init``
itself retries an unreachable one for about two minutes). Workers are actors that each load the
models once; ``num_gpus=1`` each when the device is cuda (Ray then shows each its GPU as cuda:0),
``torch.set_num_threads(threads)`` each, so workers sharing a machine do not oversubscribe it. A
killed worker is restarted and the task it was running run again (``RETRIES`` times); the driver
writes a task's output only when the task returns, so nothing is lost or written twice.
"""
from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import ray

from ..errors import OptTreeError

RETRIES = 3  # restarts of a killed worker, and runs again of the task it was running


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a local Ray cluster on this machine's cores
    workers: int | None = None  # None: the cluster's CPUs // threads (its GPUs when the device is cuda), >= 1
    threads: int = 1  # torch threads of each worker (torch.set_num_threads), so workers do not oversubscribe
    num_cpus: int | None = None  # the local cluster's CPUs (None: os.cpu_count()); not with an address


def check_address(address: str) -> None:
    """A one-line OptTreeError unless ``HOST:PORT`` (or ``ray://HOST:PORT``) accepts a TCP connection;
    ``auto`` (the cluster ``ray start`` left on this machine) is left to Ray."""
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


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[None]:
    """Connect to (or start) the cluster; shut the connection down on the way out if this call made it.
    A caller already connected (a test, a notebook) keeps its connection."""
    if options.address is not None:
        check_address(options.address)
    if ray.is_initialized():
        yield
        return
    try:
        if options.address is None:
            ray.init(num_cpus=options.num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=options.address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise OptTreeError(f"--ray {options.address or '(local)'}: cannot start Ray: {first_line(e)}") from None
    try:
        yield
    finally:
        ray.shutdown()


def worker_count(options: RayOptions, device: str) -> int:
    """``options.workers``, else what the cluster holds: its GPUs (cuda) or its CPUs // threads, at least 1."""
    resources = ray.cluster_resources()
    if device.startswith("cuda"):
        gpus = int(resources.get("GPU", 0))
        if gpus < 1:
            raise OptTreeError(f"the device is {device}, but the Ray cluster has no GPU: start its nodes on GPU "
                               "machines, or use the cpu")
        return options.workers or gpus
    return options.workers or max(1, int(resources.get("CPU", 1)) // options.threads)


def actor_options(options: RayOptions, device: str, name: str) -> dict:
    """A worker actor's resources and restarts: its threads as CPUs, one GPU on cuda, ``RETRIES``."""
    return {"name": name, "num_cpus": options.threads, "num_gpus": 1 if device.startswith("cuda") else 0,
            "max_restarts": RETRIES, "max_task_retries": RETRIES}


def worker_device(device: str) -> str:
    """The device inside a worker: Ray shows a cuda worker its one GPU as cuda:0."""
    return "cuda" if device.startswith("cuda") else device


def get(ref, what: str):
    """``ray.get(ref)``: an OptTreeError raised in a worker as itself (one line); a worker that died
    more than ``RETRIES`` times as one line saying that a rerun resumes."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, OptTreeError):
            raise OptTreeError(str(e.cause)) from None
        raise
    except ray.exceptions.RayActorError as e:
        raise OptTreeError(f"a Ray worker died {RETRIES + 1} times {what} ({first_line(e)}): what was written "
                           "so far is kept; rerun the same command to resume") from None
