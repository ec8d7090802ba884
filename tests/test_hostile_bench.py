"""Hostile input and faults (issue #19) against the bench harness: the whole config is checked before
anything is written, a resumed run trusts neither changed prompts nor foreign files, a torn
progress line costs one pair once, two processes never share a run folder, Ctrl-C is one line."""
import json

import pytest
from test_cli import save_tiny

from opttree_core.errors import OptTreeError
from opttree_core.tools.bench import read_progress, run_bench
from opttree_core.tools.bench import run as bench_run
from opttree_core.tools.cli import main
from opttree_core.treelog import TreeLog


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("hostile-bench-models") / "target")


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("t5 t6 t7\nt9 t10\n")
    return path


def config(target_dir, prompts, **extra):
    return {"target": target_dir, "drafters": ["ngram"], "policies": ["opt-tree"], "budgets": [2],
            "temperatures": [0.0], "max_new_tokens": 4, "chat": False, "peers": ["ar"],
            "datasets": [{"kind": "prompts", "path": str(prompts)}], **extra}


def toml(target_dir, prompts, tmp_path, lines: str, dataset: str = "") -> str:
    """A config file: the small grid above, with ``lines`` replacing the keys they set."""
    base = config(target_dir, prompts)
    base.pop("datasets")
    keys = {line.split("=")[0].strip() for line in lines.splitlines() if "=" in line and not line.startswith("[")}
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in base.items() if k not in keys) + lines + "\n"
    dataset = dataset or f'kind = "prompts"\npath = "{prompts}"\n'
    path = tmp_path / "c.toml"
    path.write_text(text + "[[datasets]]\n" + dataset)
    return str(path)


def bench(capsys, config_file, out):
    code = main(["bench", "--config", config_file, "--out", str(out), "--no-progress"])
    return code, capsys.readouterr().err


# --- items 6 and 13: the whole config, before anything is written -------------------------------

@pytest.mark.parametrize("lines,needle", [
    ("max_new_tokens = 0", "max_new_tokens must be an integer >= 1"),
    ('max_new_tokens = "eight"', "'max_new_tokens' must be an integer"),
    ('seed = "zero"', "'seed' must be an integer"),
    ("temperatures = [nan]", "temperature must be a finite number"),
    ("max_time = inf", "'max_time' must be a finite number"),
    ("draft_vocab = -1", "'draft_vocab' must be >= 0"),
    ("target = 5", "'target' must be a string"),
    ("[policy_params.opt-tree]\nthreshold = 7", "threshold delta must be a number in [0, 1]"),
    ('[policy_params.opt-tree]\nthreshold = "high"', "threshold = 'high': not a valid float"),
    ("budgets = [100000000]", "a node budget of 100000000 needs about"),
])
def test_every_config_value_is_checked_before_the_run_folder_is_written(target_dir, prompts, tmp_path, capsys,
                                                                       lines, needle):
    code, err = bench(capsys, toml(target_dir, prompts, tmp_path, lines), tmp_path / "run")
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: bench config: ") and needle in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("dataset,needle", [
    ('kind = "prompts"\npath = "PROMPTS"\nlimit = -1', "dataset key 'limit' must be >= 1"),
    ('kind = "prompts"\npath = "PROMPTS"\nlimit = "2"', "dataset key 'limit' must be an integer"),
    ('kind = "gsm8k"\npath = "PROMPTS"', "line 1 is not JSON"),
])
def test_dataset_limit_and_kind_are_checked(target_dir, prompts, tmp_path, capsys, dataset, needle):
    config_file = toml(target_dir, prompts, tmp_path, "", dataset.replace("PROMPTS", str(prompts)))
    code, err = bench(capsys, config_file, tmp_path / "run")
    assert code == 2 and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("lines", ["budgets = [4]\n[policy_params.opt-tree]\nnodes = 8",
                                   "budgets = [4, 8]\n[policy_params.opt-tree]\nnodes = 8"])
def test_an_override_that_changes_the_budget_is_refused(target_dir, prompts, tmp_path, capsys, lines):
    """Issue 26 item 2: budgets = [4] with nodes = 8 exited 0 and labelled every result "opt-tree n=4"
    while every tree used 8 nodes; with budgets = [4, 8] both cells ran at 8."""
    code, err = bench(capsys, toml(target_dir, prompts, tmp_path, lines), tmp_path / "run")
    assert code == 2 and err.count("\n") == 1 and "policy_params.opt-tree.nodes = 8 changes how many nodes" in err
    assert not (tmp_path / "run").exists()


def test_an_override_that_keeps_the_budget_is_taken(target_dir, prompts, tmp_path):
    result = run_bench(config(target_dir, prompts, policy_params={"opt-tree": {"threshold": 0.0, "max_depth": 3}}),
                       tmp_path / "run", progress=False)
    tree = result.results[result.results["kind"] == "tree"].iloc[0]
    meta = TreeLog.load(result.out_dir / tree.log_dir).meta["policy_config"]
    assert (meta["nodes"], meta["threshold"], meta["max_depth"]) == (2, 0.0, 3) and tree.budget == 2


# --- items 4, 5, 17: what a resumed run trusts --------------------------------------------------

def test_changed_prompts_are_refused_on_resume(target_dir, prompts, tmp_path):
    run_bench(config(target_dir, prompts), tmp_path / "run", progress=False)
    prompts.write_text("t5 t6 t8\nt9 t10\n")  # the first prompt edited between runs
    with pytest.raises(OptTreeError, match=r"was run on other prompts \(1 prompt\(s\) changed, e.g. prompts-0\)"):
        run_bench(config(target_dir, prompts), tmp_path / "run", progress=False)


def test_a_torn_progress_line_costs_its_pair_once(target_dir, prompts, tmp_path):
    out, seen = tmp_path / "run", []

    def interrupt(prompt_id, method):
        seen.append(method)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_bench(config(target_dir, prompts), out, progress=False, on_pair=interrupt)
    with open(out / "progress.jsonl", "a") as f:
        f.write('{"row": {"prompt_id": "prompts-1", "met')  # killed mid-append
    again = run_bench(config(target_dir, prompts), out, progress=False)
    assert (again.resumed, again.ran) == (2, 2)
    lines = (out / "progress.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["token_ids"] for line in lines)
    third = run_bench(config(target_dir, prompts), out, progress=False)
    assert (third.resumed, third.ran) == (4, 0)


@pytest.mark.parametrize("damage,needle", [
    ("config", "config.json is not valid JSON"),
    ("foreign", "progress.jsonl line 1 is not a progress record of this harness"),
    ("other-run", "which is not in this run's grid"),
])
def test_a_corrupt_config_or_a_foreign_progress_line_is_one_line(target_dir, prompts, tmp_path, capsys, damage,
                                                                needle):
    config_file, out = toml(target_dir, prompts, tmp_path, ""), tmp_path / "run"
    assert bench(capsys, config_file, out)[0] == 0
    if damage == "config":
        (out / "config.json").write_text((out / "config.json").read_text()[:40])
    elif damage == "foreign":
        (out / "progress.jsonl").write_text('{"foo": 1}\n' + (out / "progress.jsonl").read_text())
    else:
        record = json.loads((out / "progress.jsonl").read_text().splitlines()[0])
        record["row"]["method"] = "chain n=9 other T=0"
        with open(out / "progress.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    code, err = bench(capsys, config_file, out)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and needle in err, err


def test_a_folder_that_is_not_a_run_is_not_written_into(target_dir, prompts, tmp_path, capsys):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "results.parquet").write_text("mine")
    code, err = bench(capsys, toml(target_dir, prompts, tmp_path, ""), tmp_path / "home")
    assert code == 2 and "exists and is not a bench run folder" in err and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["results.parquet"]


# --- item 9 and Ctrl-C: one process per run folder ----------------------------------------------

def test_a_second_process_on_a_run_folder_is_refused(target_dir, prompts, tmp_path):
    out, refused = tmp_path / "run", []

    def second_run(prompt_id, method):
        if not refused:
            with pytest.raises(OptTreeError, match="is in use by another bench run") as info:
                run_bench(config(target_dir, prompts), out, progress=False)
            refused.append(str(info.value))

    first = run_bench(config(target_dir, prompts), out, progress=False, on_pair=second_run)
    assert len(refused) == 1 and first.ran == 4
    assert len((out / "progress.jsonl").read_text().splitlines()) == 4  # every pair once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt", "run"]  # the lock is gone


def test_ctrl_c_is_one_line_with_the_resume_hint_and_exit_130(target_dir, prompts, tmp_path, capsys, monkeypatch):
    real = bench_run.run_pair
    calls = []

    def interrupted_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(bench_run, "run_pair", interrupted_second)
    with pytest.raises(SystemExit) as stop:
        bench(capsys, toml(target_dir, prompts, tmp_path, ""), tmp_path / "run")
    assert stop.value.code == 130
    assert capsys.readouterr().err == "interrupted; rerun the same command to resume\n"
    assert len(read_progress(tmp_path / "run")) == 1
