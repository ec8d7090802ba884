"""Sequoia: the DP against brute force over every tree, the policy's tree, and the acceptance vector."""
import itertools
import json
import random

import pytest
import torch
from conftest import (
    ScriptedDrafter,
    hf_greedy,
    perturbed_copy,
    random_prompt,
)

from opttree_core.decoding import DecodeConfig, generate
from opttree_core.drafters import DraftLMDrafter, self_drafter
from opttree_core.errors import OptTreeError
from opttree_core.policies.registry import make_policy, policy_for_budget
from opttree_core.grow import ChildSampling
from opttree_core.policies.sequoia import (
    DEFAULT_ACCEPTANCE_FILE,
    SequoiaConfig,
    SequoiaPolicy,
    expected_accepted,
    load_acceptance,
    optimal_tree,
    save_acceptance,
)
from opttree_core.tools.sequoia_measure import acceptance_vector, main, rank_counts


def all_trees(n: int, k: int, depth: int):
    """Every ordered tree with n nodes below the root, at most k children a node, at most ``depth``
    layers, as nested tuples of child subtrees (child i has rank i)."""
    if n == 0:
        return [()]
    if depth == 0:
        return []

    def compositions(total, parts):
        if parts == 0:
            if total == 0:
                yield ()
            return
        for first in range(1, total - parts + 2):
            for rest in compositions(total - first, parts - 1):
                yield (first,) + rest

    trees = []
    for c in range(1, min(k, n) + 1):
        for sizes in compositions(n, c):
            trees += itertools.product(*[all_trees(s - 1, k, depth - 1) for s in sizes])
    return trees


def tree_value(tree, p, weight=1.0) -> float:
    return sum(weight * p[i] + tree_value(sub, p, weight * p[i]) for i, sub in enumerate(tree))


def random_vector(seed: int, k: int) -> list[float]:
    rng = random.Random(seed)
    raw = [rng.random() ** 2 for _ in range(k + 1)]  # the last share: no child accepted
    return [x / sum(raw) for x in raw[:k]]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_depth", [None, 1, 2, 3])
def test_dp_equals_brute_force_over_all_trees(seed, max_depth):
    k = 1 + seed % 3
    p = random_vector(seed, k)
    for n in range(1, 8):
        trees = all_trees(n, k, n if max_depth is None else max_depth)
        if not trees:
            with pytest.raises(OptTreeError, match="do not fit"):
                optimal_tree(p, n, max_depth)
            continue
        paths = optimal_tree(p, n, max_depth)
        assert expected_accepted(p, paths) == pytest.approx(max(tree_value(t, p) for t in trees), abs=1e-12)
        assert len(set(paths)) == n and all(path[:-1] in set(paths) | {()} for path in paths)  # a tree
        assert all(path[-1] == 0 or path[:-1] + (path[-1] - 1,) in paths for path in paths)  # contiguous ranks
        assert max(map(len, paths)) <= (max_depth or n) and max(max(path) for path in paths) < k


def test_dp_shapes_follow_the_vector():
    assert optimal_tree([0.9, 0.05], 4) == [(0,), (0, 0), (0, 0, 0), (0, 0, 0, 0)]  # a confident draft: a chain
    assert optimal_tree([0.3, 0.3, 0.3], 3) == [(0,), (1,), (2,)]  # a flat one: a star
    capped = optimal_tree([0.9, 0.05], 4, max_depth=2)  # (0, 1) and (1, 0) tie: either is optimal
    assert capped[:3] == [(0,), (1,), (0, 0)] and len(capped[3]) == 2
    assert optimal_tree([0.2] * 5, 128, 16) == optimal_tree((0.2,) * 5, 128, 16)  # memoised, lists or tuples


@pytest.mark.parametrize("vector,needle", [
    ([], "1 to"), ([0.5, -0.1], r"\[0, 1\]"), ([0.7, 0.5], "sum to"), (["x"], "sequence of numbers"),
])
def test_bad_acceptance_vector_is_a_one_line_error(vector, needle):
    with pytest.raises(OptTreeError, match=needle) as err:
        optimal_tree(vector, 4)
    assert "\n" not in str(err.value)
    with pytest.raises(OptTreeError, match=needle):
        SequoiaConfig(nodes=4, acceptance=vector)


def rank_paths(tree) -> set[tuple[int, ...]]:
    ranks = tree.rank.tolist()
    return {tuple(ranks[i] for i in tree.path_to(node)) for node in range(1, tree.n_nodes)}


@pytest.mark.parametrize("nodes,max_depth", [(1, None), (6, 2), (12, 4), (20, None)])
def test_policy_drafts_exactly_the_dp_tree(nodes, max_depth):
    p = (0.55, 0.2, 0.1)
    drafter = ScriptedDrafter(vocab_size=6, salt=f"{nodes}")
    policy = SequoiaPolicy(SequoiaConfig(nodes=nodes, max_depth=max_depth, acceptance=p))
    tree = policy.build(drafter, 0, 99, "cpu")
    assert rank_paths(tree) == set(optimal_tree(p, nodes, max_depth)) and tree.n_nodes == nodes + 1
    tokens = tree.tokens.tolist()
    for node in range(1, tree.n_nodes):  # the rank-r child is the draft's r-th most likely token
        path = tuple(tokens[i] for i in tree.path_to(node)[:-1])
        order = drafter.probs(path).argsort(descending=True).tolist()
        assert tokens[node] == order[tree.rank[node]]
    parents_with_children = {path[:-1] for path in optimal_tree(p, nodes, max_depth)}
    assert drafter.calls == len({len(path) for path in parents_with_children})  # one draft call per layer


def test_policy_honours_the_depth_cap_and_samples_children():
    p = (0.6, 0.25)
    policy = SequoiaPolicy(SequoiaConfig(nodes=10, max_depth=None, acceptance=p))
    capped = policy.build(ScriptedDrafter(vocab_size=6), 0, 2, "cpu")
    assert rank_paths(capped) == {path for path in policy.paths if len(path) <= 2}
    assert policy.build(ScriptedDrafter(), 5, 0, "cpu").tokens.tolist() == [5]
    sampled = policy.build(ScriptedDrafter(vocab_size=6), 0, 99, "cpu", children=ChildSampling(torch.Generator().manual_seed(0)))
    assert rank_paths(sampled) == set(policy.paths) and sampled.sampled_children


def test_greedy_decoding_through_sequoia_equals_plain_greedy(target):
    draft = perturbed_copy(target, seed=3, noise=0.3)
    policy = SequoiaPolicy(SequoiaConfig(nodes=8, max_depth=4, acceptance=(0.5, 0.2, 0.1)))
    for seed in range(3):
        prompt = random_prompt(seed)
        result = generate(target, DraftLMDrafter(draft), policy, prompt, DecodeConfig(max_new_tokens=24, stop_at_eos=False))
        assert result.token_ids == hf_greedy(target, prompt, 24)
        assert max(result.accept_lengths) > 1  # the draft does get tokens accepted


def test_self_drafter_accepts_its_top_1_everywhere(target):
    prompts = [random_prompt(s) for s in range(2)]
    p = acceptance_vector(target, self_drafter(target), prompts, k=4, max_new_tokens=10)
    assert p == [1.0, 0.0, 0.0, 0.0]


def test_rank_counts_equal_a_teacher_forced_reference(target):
    """Every position of the target's greedy continuation, ranked by the draft run from scratch."""
    draft = perturbed_copy(target, seed=5, noise=0.6)
    prompts = [random_prompt(s, length=6) for s in (11, 12)]
    stats = rank_counts(target, DraftLMDrafter(draft), prompts, k=3, max_new_tokens=12)
    expected, positions = [0, 0, 0], 0
    for prompt in prompts:
        continuation = hf_greedy(target, prompt, 12)
        sequence = prompt.tolist() + continuation
        for t, token in enumerate(continuation):
            prefix = torch.tensor(sequence[: prompt.numel() + t])[None]
            with torch.no_grad():
                ranking = draft(prefix).logits[0, -1].topk(3).indices.tolist()
            positions += 1
            if token in ranking:
                expected[ranking.index(token)] += 1
    assert stats.positions == positions and list(stats.counts) == expected
    assert 0 < stats.counts[0] < positions and sum(stats.acceptance) <= 1.0


def test_vector_json_round_trip_and_the_shipped_default(tmp_path):
    path = save_acceptance(tmp_path / "vec.json", [0.5, 0.1], positions=10)
    assert load_acceptance(path) == (0.5, 0.1) and json.loads(path.read_text())["positions"] == 10
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(OptTreeError, match="cannot read an acceptance vector"):
        load_acceptance(tmp_path / "bad.json")
    shipped = json.loads(DEFAULT_ACCEPTANCE_FILE.read_text())
    assert SequoiaConfig().acceptance == tuple(shipped["acceptance"]) and shipped["positions"] >= 100
    assert shipped["target"] == "smollm2-135m" and shipped["draft"] == "eagle-smollm2"


def test_registry_and_budget():
    policy = policy_for_budget("sequoia", 7)
    assert policy.max_nodes == 7 and len(policy.paths) == 7 and policy.config.acceptance == SequoiaConfig().acceptance
    assert make_policy("sequoia", nodes=3, acceptance=[0.5, 0.3]).paths == [(0,), (1,), (0, 0)]


def test_tree_command_prints_the_paths(tmp_path, capsys):
    save_acceptance(tmp_path / "vec.json", [0.6, 0.3])
    assert main(["tree", "--acceptance", str(tmp_path / "vec.json"), "--nodes", "4", "--max-depth", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:4] == [" ".join(map(str, p)) for p in optimal_tree([0.6, 0.3], 4, 2)] and out[4].startswith("F(T) =")
    assert main(["tree", "--acceptance", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read an acceptance vector")
