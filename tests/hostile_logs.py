"""Small tree logs and the child processes that write them, for the fault tests of the log writer
(``test_hostile_inputs.py``). Torch-free, so a child starts in about a second:

    python tests/hostile_logs.py PATH writer N W    write N logs (markers W*1000 + i) to PATH
    python tests/hostile_logs.py PATH killed K      save one log, SIGKILLed right after its K-th filesystem step
"""
import os
import shutil
import signal
import sys

import numpy as np
import pandas as pd

from opttree_core import atomic
from opttree_core.records import NODE_COLUMNS, STEP_COLUMNS, LogData, write_log


def small_log(marker: int, rows: int = 50) -> LogData:
    """A valid log whose every node token and whose meta carry ``marker``, with ``marker % 7 + 1``
    steps: files of two different writes never look like one log."""
    nodes = pd.DataFrame({c: np.full(rows, marker % 2 if t == "bool" else marker, dtype=t)
                          for c, t in NODE_COLUMNS.items()})
    steps = pd.DataFrame({c: np.zeros(marker % 7 + 1, dtype=t) for c, t in STEP_COLUMNS.items()})
    return LogData(nodes=nodes, steps=steps, meta={"marker": marker})


def _killing(fn, calls: list, k: int):
    def step(*args, **kwargs):
        result = fn(*args, **kwargs)
        calls.append(fn)
        if len(calls) == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return step


def main(argv: list[str]) -> None:
    path, mode = argv[0], argv[1]
    if mode == "writer":
        for i in range(int(argv[2])):
            write_log(path, small_log(int(argv[3]) * 1000 + i))
        return
    calls: list = []
    for module, name in ((os, "rename"), (os, "replace"), (shutil, "rmtree"), (atomic, "exchange")):
        if hasattr(module, name):  # the writer of before issue 19 has no ``exchange``
            setattr(module, name, _killing(getattr(module, name), calls, int(argv[2])))
    write_log(path, small_log(2))


if __name__ == "__main__":
    main(sys.argv[1:])
