"""Trees for serving engines from logged runs: vLLM's level-uniform tree passes vLLM's own rule, SGLang's
flags are its EAGLE-2 tree, and replaying the logged steps gives the MAL the command reports."""
import ast
import json
from pathlib import Path

import numpy as np
import pytest

from opttree_core.decoding import DecodeConfig, generate
from opttree_core.drafters import DraftLMDrafter
from opttree_core.errors import OptTreeError
from opttree_core.policies.base import GrowthPolicy
from opttree_core.policies.rank_paths import RankPathRule
from opttree_core.policies.sequoia import expected_accepted, level_uniform_paths, level_uniform_tree
from opttree_core.records import read_log
from opttree_core.tools.cli import main
from opttree_core.tools.serving import (
    LoggedStep,
    acceptance_from_logs,
    best_sglang_flags,
    replay,
    sglang_tree,
    vllm_tree_problem,
)
from opttree_core.treelog import TreeLog
from conftest import perturbed_copy, random_prompt, tiny_model


def vllm_drafts(tree_string: str) -> list[tuple]:
    """What vLLM's EagleProposer drafts for ``speculative_token_tree`` (vllm/v1/spec_decode/eagle.py,
    ``__init__`` and ``propose_tree``; the tree sorted as vllm/config/speculative.py sorts it): per level,
    child_drafts_per_level[l] = n_l // n_{l-1} top-k children under every node of the level above, in order."""
    choices = sorted(ast.literal_eval(tree_string), key=lambda t: (len(t), t))
    depth = len(choices[-1])
    per_level = [sum(len(c) == d + 1 for c in choices) for d in range(depth)]
    children = [per_level[0]] + [per_level[d] // per_level[d - 1] for d in range(1, depth)]
    drafted, level = [], [()]
    for c in children:
        level = [parent + (i,) for parent in level for i in range(c)]
        drafted += level
    return drafted


@pytest.mark.parametrize("tree, ok", [
    ([(0,), (1,), (0, 0), (0, 1), (1, 0), (1, 1)], True),
    ([(1,), (0,), (0, 0), (1, 0)], True),  # any order: vLLM sorts it
    ([(0,), (1,), (0, 0)], False),  # level 2 not uniform
    ([(0,), (0, 1)], False),  # child rank 1 without rank 0
    ([(0, 0)], False),  # a node without its parent
    ([(0,), (0,)], False),
])
def test_vllm_rule_accepts_exactly_what_vllm_drafts(tree, ok):
    assert (vllm_tree_problem(tree) is None) == ok
    if ok:
        assert vllm_drafts(str(tree)) == sorted(tree, key=lambda t: (len(t), t))


def _uniform_value(p, children):
    value, prod = 0.0, 1.0
    for c in children:
        prod *= sum(p[:c])
        value += prod
    return value


def _all_uniform_trees(nodes, depth, k, width=1):
    """Every children-per-level sequence with at most ``nodes`` nodes, ``depth`` levels, ``k`` children."""
    yield ()
    if depth == 0:
        return
    for c in range(1, k + 1):
        if width * c <= nodes:
            for rest in _all_uniform_trees(nodes - width * c, depth - 1, k, width * c):
                yield (c, *rest)


@pytest.mark.parametrize("seed", range(3))
def test_level_uniform_dp_is_the_best_level_uniform_tree(seed):
    rng = np.random.default_rng(seed)
    p = tuple((rng.dirichlet(np.ones(5)) * 0.9).tolist())
    for nodes, depth in ((6, 3), (14, 4), (20, 10), (60, 10)):
        best = max(_uniform_value(p, children) for children in _all_uniform_trees(nodes, depth, len(p)))
        chosen = level_uniform_tree(p, nodes, depth)
        paths = level_uniform_paths(chosen)
        assert len(paths) <= nodes and len(chosen) <= depth and vllm_tree_problem(paths) is None
        assert expected_accepted(p, paths) == pytest.approx(best) == pytest.approx(_uniform_value(p, chosen))


def test_kaplan_meier_acceptance_from_hand_built_steps():
    steps = [LoggedStep((0,), (frozenset({0, 1}), frozenset({0}))),  # root: rank 0 accepted; then none of {0}
             LoggedStep((1,), (frozenset({0, 1}), frozenset())),  # root: rank 1 accepted; a leaf
             LoggedStep((), (frozenset({0}),))]  # root: none of {0}: censored at rank 1
    p = acceptance_from_logs(steps, k=4)
    # rank 0: at risk 4 (3 roots + the accepted node with children), accepted 1; rank 1: at risk 1, accepted 1
    assert p == pytest.approx([1 / 4, 3 / 4])


def test_sglang_tree_is_eagle2_selection_under_the_positional_model():
    p = [0.6, 0.3]
    # steps 2, topk 2: layer 1 (0) .6, (1) .3; layer 2 (0,0) .36, (0,1) .18, (1,0) .18, (1,1) .09; the best 3
    assert sglang_tree(p, 2, 2, 4) == [(0,), (1,), (0, 0)]
    flags = best_sglang_flags(p, nodes=5, max_depth=3, max_topk=3)
    assert flags["draft_tokens"] - 1 <= 5 and flags["steps"] <= 3
    assert flags["expected_mal"] == pytest.approx(1 + expected_accepted(p, flags["paths"]))
    chain = best_sglang_flags([0.99], nodes=4, max_depth=4, max_topk=1)
    assert (chain["topk"], chain["draft_tokens"]) == (1, chain["steps"] + 1)  # SGLang's topk-1 rule


class StaticTree(GrowthPolicy):
    """A fixed tree of rank paths (what vLLM drafts for a ``speculative_token_tree``)."""

    name = "static"

    def __init__(self, paths):
        self.paths, self.config = paths, None

    @property
    def max_nodes(self):
        return len(self.paths)

    @property
    def depth(self):
        return max(map(len, self.paths))

    def rule(self):
        return RankPathRule(self.paths)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """Greedy runs of a tiny target with a perturbed copy as the draft, through a level-uniform tree."""
    root = tmp_path_factory.mktemp("logs")
    target = tiny_model(5, layers=2)
    drafter = DraftLMDrafter(perturbed_copy(target, seed=1, noise=0.3))
    tree = level_uniform_paths((3, 2, 1))
    mals = []
    for i in range(3):
        log = TreeLog(max_steps=40, max_nodes=len(tree) + 1, meta={"policy": "static"})
        out = generate(target, drafter, StaticTree(tree), random_prompt(i), DecodeConfig(max_new_tokens=40,
                                                                                           stop_at_eos=False), log=log)
        log.save(root / f"p{i}")
        mals.append((len(out.token_ids), out.steps))
    return root, tree, sum(t for t, _ in mals) / sum(s for _, s in mals)


def _independent_replay(directory, paths):
    """Walk every logged step's accepted nodes by parent pointers; A = 1 + the deepest accepted node whose rank
    path is in the tree (every ancestor of such a node is in it too: trees are closed under parents)."""
    tree, total, count = set(paths), 0, 0
    for log_dir in sorted(directory.iterdir()):
        nodes = read_log(log_dir).nodes
        for _, g in nodes.groupby("step"):
            rank = dict(zip(g["node"], g["rank"]))
            parent = dict(zip(g["node"], g["parent"]))
            best = 0
            for node in g.loc[g["accepted"] & (g["depth"] > 0), "node"]:
                path, n = [], node
                while n > 0:
                    path.append(int(rank[n]))
                    n = parent[n]
                if tuple(reversed(path)) in tree:
                    best = max(best, len(path))
            total, count = total + best + 1, count + 1
    return total / count


def test_replay_through_the_tree_that_drafted_the_logs_is_their_mal(logs):
    from opttree_core.tools.serving import logged_steps

    directory, tree, mal = logs
    steps = [s for d in sorted(directory.iterdir()) for s in logged_steps(read_log(d))]
    result = replay(steps, tree)
    assert result.mal == pytest.approx(mal) == pytest.approx(_independent_replay(directory, tree))
    assert result.censored <= 3  # only a last step whose tree the token budget cut short


def test_the_command_reports_valid_engine_settings_and_the_mal_their_replay_gives(logs, capsys, tmp_path):
    directory, _, mal = logs
    code = main(["serve-tree", str(directory), "--nodes", "12", "--max-depth", "4", "--json",
                 "--out", str(tmp_path / "serve.json")])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["steps"] > 0 and report["logged_mal"] == pytest.approx(mal)
    vllm, sglang = report["vllm"], report["sglang"]
    choices = ast.literal_eval(vllm["speculative_token_tree"])
    assert vllm_tree_problem(choices) is None and vllm_drafts(vllm["speculative_token_tree"]) == choices
    assert vllm["num_speculative_tokens"] == len(choices) <= 12 and max(map(len, choices)) <= 4
    assert vllm["replay"]["mal"] == pytest.approx(_independent_replay(directory, choices))
    assert vllm["expected_mal"] == pytest.approx(1 + expected_accepted(report["acceptance"], choices))
    assert sglang["speculative_num_draft_tokens"] - 1 <= 12 and sglang["speculative_num_steps"] <= 4
    sg_paths = sglang_tree(report["acceptance"], sglang["speculative_num_steps"], sglang["speculative_eagle_topk"],
                           sglang["speculative_num_draft_tokens"])
    assert sglang["replay"]["mal"] == pytest.approx(_independent_replay(directory, sg_paths))
    assert json.loads((tmp_path / "serve.json").read_text()) == report


def test_the_command_needs_logs(tmp_path, capsys):
    assert main(["serve-tree", str(tmp_path)]) == 2
    assert "no tree logs" in capsys.readouterr().err
    with pytest.raises(OptTreeError):
        level_uniform_tree([0.5], 0)


def test_an_unbounded_depth_or_width_is_cut_to_the_node_budget(logs, capsys):
    """Issue 26 item 7: --max-depth 100000 searched for minutes; a tree of n nodes is never deeper or
    wider than n, so the search is cut there (and the report says what it used)."""
    import time

    directory, _, _ = logs
    start = time.perf_counter()
    code = main(["serve-tree", str(directory), "--nodes", "6", "--max-depth", "100000", "--max-topk", "100000",
                 "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and time.perf_counter() - start < 30
    assert report["max_depth"] == 6 and report["max_topk"] == 6
    assert main(["serve-tree", str(directory), "--max-depth", "0"]) == 2
    assert capsys.readouterr().err == "error: max depth must be an integer >= 1, got 0\n"


def test_out_problems_are_one_line_before_the_work_and_leave_nothing_behind(logs, capsys, tmp_path, monkeypatch):
    """Issue 26: --out problems were tracebacks, and a directory as --out left a hidden .tmp file."""
    directory, _, _ = logs
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    read = []
    monkeypatch.setattr("opttree_core.tools.serve_tree._workload", lambda paths: read.append(paths))
    for out, needle in ((tmp_path / "dir", "dir is a directory: give a file name in it"),
                        (tmp_path / "file" / "r.json", "file is a file, not a directory")):
        assert main(["serve-tree", str(directory), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, err
    assert read == [] and sorted(p.name for p in (tmp_path / "dir").iterdir()) == []
    monkeypatch.undo()

    def full_disk(self, text, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    assert main(["serve-tree", str(directory), "--out", str(tmp_path / "r.json"), "--json"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: cannot write {tmp_path / 'r.json'}: No space left on device\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "file"]
