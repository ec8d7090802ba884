"""TreeLog: on-device recording, Parquet round trip, atomic writes."""
import json

import numpy as np
import pytest
import torch

from opttree_core.decoding import DecodeConfig, generate
from opttree_core.drafters import DraftLMDrafter
from opttree_core.errors import OptTreeError
from opttree_core.policies import OptTreeConfig, OptTreePolicy
from opttree_core.treelog import TreeLog
from conftest import perturbed_copy, random_prompt, tiny_model


@pytest.fixture(scope="module")
def run():
    target = tiny_model(2)
    draft = perturbed_copy(target, 2, noise=0.05)
    policy = OptTreePolicy(OptTreeConfig(nodes=12, threshold=0.0, max_depth=5))
    log = TreeLog(max_steps=4, max_nodes=13, meta={"target": "tiny", "seed": 0})  # grows past 4 steps
    trees, results = [], []
    result = generate(target, DraftLMDrafter(draft), policy, random_prompt(2), DecodeConfig(max_new_tokens=40, stop_at_eos=False),
                      log=log, on_step=lambda record: (trees.append(record.tree), results.append(record)))
    return log, result, trees, results


def test_round_trip_equals_what_was_recorded(run, tmp_path):
    log, result, trees, results = run
    data = TreeLog.load(log.save(tmp_path / "log"))
    assert len(data.steps) == result.steps == len(trees)
    assert data.steps["a"].tolist() == result.accept_lengths
    assert data.meta == {"target": "tiny", "seed": 0}
    for step, (tree, res) in enumerate(zip(trees, results)):
        rows = data.nodes[data.nodes.step == step].sort_values("node")
        assert rows["token"].tolist() == tree.tokens.tolist()
        assert rows["parent"].tolist() == tree.parents.tolist()
        assert rows["depth"].tolist() == tree.depth.tolist()
        assert rows["rank"].tolist() == tree.rank.tolist()
        np.testing.assert_array_equal(rows["p_hat"].to_numpy(), tree.p_hat.numpy())
        np.testing.assert_array_equal(rows["q"].to_numpy(), tree.q.numpy())
        assert rows["target_token"].tolist() == res.target_tokens.tolist()
        assert rows["accepted"].tolist() == res.accepted.tolist()
        assert data.steps.loc[step, "ea"] == pytest.approx(tree.p_hat[1:].sum().item(), rel=1e-6)
        assert data.steps.loc[step, "n_nodes"] == tree.n_nodes


def test_accepted_nodes_form_one_root_path_of_length_a_minus_one(run, tmp_path):
    log = run[0]
    data = TreeLog.load(log.save(tmp_path / "log"))
    for step, rows in data.nodes.groupby("step"):
        accepted = rows[rows.accepted & (rows.depth > 0)].sort_values("depth")
        a = data.steps.loc[step, "a"]
        assert len(accepted) == a - 1
        assert accepted["depth"].tolist() == list(range(1, a))
        parent_of = dict(zip(rows.node, rows.parent))
        chain = [0] + accepted["node"].tolist()
        assert all(parent_of[child] == parent for parent, child in zip(chain, chain[1:]))


def test_save_replaces_atomically_and_leaves_no_temp_files(run, tmp_path):
    log = run[0]
    path = tmp_path / "log"
    log.save(path)
    log.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]
    assert json.loads((path / "meta.json").read_text())["seed"] == 0


def test_failed_write_keeps_the_previous_log(run, tmp_path, monkeypatch):
    log = run[0]
    path = log.save(tmp_path / "log")
    before = (path / "nodes.parquet").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("pandas.DataFrame.to_parquet", broken)
    with pytest.raises(OptTreeError, match="cannot write the tree log .*disk full"):
        log.save(path)
    assert (path / "nodes.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


def test_loading_something_else_is_a_one_line_error(tmp_path):
    with pytest.raises(OptTreeError, match="not a tree log: missing nodes.parquet"):
        TreeLog.load(tmp_path)


def test_recording_stays_on_device_and_within_budget():
    log = TreeLog(max_steps=1000, max_nodes=501)
    assert log.nbytes() < 64 * 2**20
    assert all(buf.device.type == "cpu" for buf in log.nodes.values())


def test_record_makes_no_host_synchronisation(run, monkeypatch):
    """Every tensor→host conversion raises inside ``record``: it only writes on the device."""
    log, _, trees, results = run
    fresh = TreeLog(max_steps=2, max_nodes=13)

    def forbidden(*args, **kwargs):
        raise AssertionError("host synchronisation inside TreeLog.record")

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    fresh.record(results[0])
    monkeypatch.undo()
    assert fresh.n_steps == 1 and fresh.nodes["token"][0, : trees[0].n_nodes].tolist() == trees[0].tokens.tolist()


def test_a_log_saved_with_a_tokenizer_holds_the_text_of_every_target_token(tmp_path):
    """Rejected nodes' target tokens and bonus tokens render offline, without the tokenizer."""
    from opttree_core.models import tiny_tokenizer
    from treeviz.logs import token_text, token_text_map

    target = tiny_model(3)
    log = TreeLog(max_steps=8, max_nodes=9)
    generate(target, DraftLMDrafter(perturbed_copy(target, 3, noise=0.3)), OptTreePolicy(OptTreeConfig(nodes=8)),
             random_prompt(3), DecodeConfig(max_new_tokens=8, stop_at_eos=False), log=log)
    data = TreeLog.load(log.save(tmp_path / "log", tokenizer=tiny_tokenizer(64)))
    texts = token_text_map(data)
    wanted = set(data.nodes["target_token"]) | set(data.steps["bonus_token"]) | set(data.nodes["token"])
    assert all(not token_text(t, texts).startswith("#") for t in wanted)


@pytest.mark.parametrize("name", ["nodes.parquet", "meta.json"])
def test_a_log_file_that_is_a_directory_is_one_line_naming_it(run, tmp_path, name):
    """Issue 26 item 1: it crashed every reader with 'IsADirectoryError: [Errno 21] Is a directory: 4'."""
    import subprocess
    import sys

    path = run[0].save(tmp_path / "log")
    (path / name).unlink()
    (path / name).mkdir()
    with pytest.raises(OptTreeError, match=f"^{path} is not a tree log: {name} is not a file$"):
        TreeLog.load(path)
    html = subprocess.run([sys.executable, "-m", "treeviz", "html", str(path), "--out", str(tmp_path / "p.html")],
                          capture_output=True, text=True, timeout=120)
    assert html.returncode == 2 and html.stderr == f"error: {path} is not a tree log: {name} is not a file\n"
