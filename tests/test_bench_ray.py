"""``bench --ray``: the grid on a local Ray cluster (2 CPUs, tiny random models) gives the tokens, MAL
and tree logs of the single-process run; a run resumes across the two; a worker killed mid-task is
restarted and nothing is lost or doubled; a bad address is one line; the default path never imports Ray."""
import json
import os
import signal
import socket
import subprocess
import sys

import pandas as pd
import pytest
import ray

from opttree_core.tools.bench import run_bench
from opttree_core.tools.ray_cluster import RayOptions
from opttree_core.tools.cli import main
from opttree_core.treelog import TreeLog
from test_bench import TIMINGS, config_dict, models, prompts_file  # noqa: F401 (fixtures)

TIMED_META = ("seconds", "tokens_per_s", "created")
TIMED_STEPS = ["draft_s", "verify_s", "build_s"]


@pytest.fixture(scope="module")
def cluster(ray_cluster):  # conftest.py: one local cluster of 2 CPUs for every Ray test
    return ray_cluster


@pytest.fixture(scope="module")
def sequential(models, prompts_file, tmp_path_factory):  # noqa: F811
    return run_bench(config_dict(models, prompts_file), tmp_path_factory.mktemp("seq") / "run", progress=False)


def progress_lines(out) -> list[dict]:
    return [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]


def assert_same_run(result, sequential):
    """Same pairs (each once), tokens, MAL, steps and tree logs as the single-process run."""
    lines = progress_lines(result.out_dir)
    pairs = [(r["row"]["prompt_id"], r["row"]["method"]) for r in lines]
    assert len(pairs) == len(set(pairs)) == len(progress_lines(sequential.out_dir))
    theirs = {(r["row"]["prompt_id"], r["row"]["method"]): r["token_ids"] for r in progress_lines(sequential.out_dir)}
    assert {(r["row"]["prompt_id"], r["row"]["method"]): r["token_ids"] for r in lines} == theirs
    key = ["prompt_id", "method"]
    a = result.results.drop(columns=TIMINGS).sort_values(key).reset_index(drop=True)
    b = sequential.results.drop(columns=TIMINGS).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    for log_dir in b["log_dir"].dropna():
        mine, other = TreeLog.load(result.out_dir / log_dir), TreeLog.load(sequential.out_dir / log_dir)
        pd.testing.assert_frame_equal(mine.nodes, other.nodes)
        pd.testing.assert_frame_equal(mine.steps.drop(columns=TIMED_STEPS), other.steps.drop(columns=TIMED_STEPS))
        assert {k: v for k, v in mine.meta.items() if k not in TIMED_META} == \
            {k: v for k, v in other.meta.items() if k not in TIMED_META}


def test_two_workers_equal_the_single_process_run(cluster, models, prompts_file, sequential, tmp_path):  # noqa: F811
    result = run_bench(config_dict(models, prompts_file), tmp_path / "run", progress=False,
                       ray=RayOptions(workers=2))
    assert result.ran == 8 and result.resumed == 0
    assert_same_run(result, sequential)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["torch_device"] == "cpu"


def test_a_ray_run_interrupted_resumes_in_one_process(cluster, models, prompts_file, sequential, tmp_path):  # noqa: F811
    seen = []

    def interrupt(prompt_id, method):
        seen.append((prompt_id, method))
        if len(seen) == 2:  # mid-prompt: the rest of that prompt's pairs are dropped and redone
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_bench(config_dict(models, prompts_file), tmp_path / "run", progress=False, on_pair=interrupt,
                  ray=RayOptions(workers=1))
    assert len(progress_lines(tmp_path / "run")) == 2
    resumed = run_bench(config_dict(models, prompts_file), tmp_path / "run", progress=False)
    assert resumed.resumed == 2 and resumed.ran == 6
    assert_same_run(resumed, sequential)


def test_a_killed_worker_is_restarted_nothing_lost_or_doubled(cluster, models, prompts_file, sequential,  # noqa: F811
                                                              tmp_path):
    killed, after = [], []

    def kill_the_worker(prompt_id, method):
        worker = ray.get_actor(f"opttree-bench-{os.getpid()}-0")  # the only worker: already on the second
        # prompt while the driver writes the first one's pairs, so the kill lands mid-task
        pid = ray.get(worker.pid.remote())  # answered while its task runs
        if not killed:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        else:
            after.append(pid)

    result = run_bench(config_dict(models, prompts_file), tmp_path / "run", progress=False,
                       on_pair=kill_the_worker, ray=RayOptions(workers=1))
    assert result.ran == 8 and after and killed[0] not in after  # a fresh process ran the second prompt
    assert_same_run(result, sequential)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address, needle", [(None, "no Ray cluster answers there"),
                                             ("not-an-address", "give the head node's address as HOST:PORT")])
def test_a_bad_address_is_one_line_and_writes_nothing(models, prompts_file, tmp_path, capsys, address,  # noqa: F811
                                                      needle):
    config = tmp_path / "c.toml"
    config.write_text(f'target = "{models["target"]}"\ndrafters = ["{models["draft"]}"]\npolicies = ["chain"]\n'
                      f'budgets = [4]\ntemperatures = [0.0]\nmax_new_tokens = 4\nchat = false\n'
                      f'[[datasets]]\nkind = "prompts"\npath = "{prompts_file}"\n')
    address = address or f"127.0.0.1:{_closed_port()}"
    code = main(["bench", "--config", str(config), "--out", str(tmp_path / "out"), "--ray", address, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]


def test_the_default_path_never_imports_ray(models, prompts_file, tmp_path, monkeypatch, capsys):  # noqa: F811
    """A fresh interpreter that imports the CLI, bench and train has no 'ray' in sys.modules; and with
    ``ray`` (and the Ray module) unimportable, a bench run and the CLI's bench still work: the default
    path never imports them, at the top of a module or inside a function."""
    code = ("import sys\nimport opttree_core.tools.cli, opttree_core.tools.bench.run, opttree_core.tools.train.cli\n"
            "import opttree_core.tools.train.data\nprint('ray' in sys.modules)")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert fresh.returncode == 0 and fresh.stdout.strip() == "False", fresh.stdout + fresh.stderr[-2000:]
    for name in ("ray", "opttree_core.tools.bench.ray_grid"):
        monkeypatch.setitem(sys.modules, name, None)  # ``import`` of either now raises ImportError
    config = config_dict(models, prompts_file, peers=["ar"], policies=["chain"])
    assert run_bench(config, tmp_path / "run", progress=False).ran == 4
    toml = tmp_path / "c.toml"
    toml.write_text(f'target = "{models["target"]}"\ndrafters = ["{models["draft"]}"]\npolicies = ["chain"]\n'
                    f'budgets = [4]\ntemperatures = [0.0]\nmax_new_tokens = 4\nchat = false\npeers = ["ar"]\n'
                    f'[[datasets]]\nkind = "prompts"\npath = "{prompts_file}"\n')
    assert main(["bench", "--config", str(toml), "--out", str(tmp_path / "cli"), "--no-progress"]) == 0


def test_a_later_turn_waits_for_the_earlier_turns_ar_answers():
    """A later MT-Bench turn goes to a worker only once the AR answers its conversation is made of are
    written (at every temperature of the grid), and it is sent those answers with its own finished pairs."""
    from types import SimpleNamespace

    from opttree_core.tools.bench.ray_grid import RayGrid

    grid = RayGrid.__new__(RayGrid)  # no cluster: the scheduling rule only
    grid.config = SimpleNamespace(temperatures=(0.0, 1.0))
    second = SimpleNamespace(prompt_id="spec_bench-81-turn2", turn=1)
    other = SimpleNamespace(prompt_id="spec_bench-200", turn=0)
    todo = [(1, second), (2, other)]
    records = {("spec_bench-81", "ar T=0"): {"token_ids": [1]}, ("spec_bench-81", "chain n=4 d T=0"): {},
               ("spec_bench-81-turn2", "ar T=1"): {"token_ids": [3]}}
    bench = SimpleNamespace(records=records)
    assert grid._ready(bench, todo) == 1  # turn 1's AR answer at T=1 is not written yet
    records[("spec_bench-81", "ar T=1")] = {"token_ids": [2]}
    assert grid._ready(bench, todo) == 0
    assert set(grid._records_for(bench, second)) == {("spec_bench-81-turn2", "ar T=1"), ("spec_bench-81", "ar T=0"),
                                                     ("spec_bench-81", "ar T=1")}
