"""OPT-Tree (Algorithm 1) on hand-made draft distributions, against brute force."""
import itertools

import pytest
import torch

from opttree_core.errors import OptTreeError
from opttree_core.policies import ChainConfig, ChainPolicy, OptTreeConfig, OptTreePolicy
from opttree_core.policies.registry import make_policy
from conftest import ScriptedDrafter


def brute_force(drafter: ScriptedDrafter, n: int, threshold: float, max_depth: int, stop: frozenset = frozenset()):
    """Enumerate every token path up to each depth (none continuing past a ``stop`` token); apply
    the stop rule; return (selected paths, stop depth)."""
    p_hat, best, chosen = {}, 0.0, None
    for depth in range(1, max_depth + 1):
        for path in itertools.product(range(drafter.vocab_size), repeat=depth):
            if stop.intersection(path[:-1]):
                continue
            p_hat[path] = p_hat.get(path[:-1], 1.0) * drafter.probs(path[:-1])[path[-1]].item()
        ranked = sorted(p_hat.items(), key=lambda kv: (-kv[1], len(kv[0])))[:n]
        e_sub = sum(v for _, v in ranked)
        chosen = ranked
        if e_sub - best <= threshold or depth == max_depth:
            return {path for path, _ in chosen}, depth, e_sub
        best = e_sub


def tree_paths(tree):
    tokens = tree.tokens.tolist()
    return {tuple(tokens[i] for i in tree.path_to(node)) for node in range(1, tree.n_nodes)}


CASES = [(n, delta, depth, salt) for n in (1, 3, 7, 12) for delta in (0.0, 0.05, 0.3)
         for depth in (1, 2, 4) for salt in ("a", "b")]


@pytest.mark.parametrize("n,delta,max_depth,salt", CASES)
def test_selected_set_is_brute_force_top_n(n, delta, max_depth, salt):
    drafter = ScriptedDrafter(vocab_size=5, sharpness=2.5, salt=salt)
    drafter.start(None)
    tree = OptTreePolicy(OptTreeConfig(nodes=n, threshold=delta, max_depth=max_depth)).build(drafter, 0, 99, "cpu")
    expected, stop_depth, e_sub = brute_force(drafter, n, delta, max_depth)
    assert tree_paths(tree) == expected
    assert tree.p_hat[1:].sum().item() == pytest.approx(e_sub, rel=1e-5)
    assert tree.max_depth <= stop_depth <= max_depth
    assert drafter.calls == stop_depth  # one draft forward per layer, none thrown away


@pytest.mark.parametrize("n,max_depth,stop", [(7, 4, {1}), (12, 4, {1, 3}), (12, 3, {2})])
def test_with_stop_tokens_the_tree_is_the_brute_force_top_n_of_paths_that_end_at_them(n, max_depth, stop):
    drafter = ScriptedDrafter(vocab_size=5, sharpness=2.5, salt="s")
    policy = OptTreePolicy(OptTreeConfig(nodes=n, threshold=0.0, max_depth=max_depth))
    free = policy.build(drafter, 0, 99, "cpu")
    below = free.parents[free.depth >= 2]  # (the root, token 0, is never a stop token here)
    assert torch.isin(free.tokens[below], torch.tensor(sorted(stop))).any()  # the case arises
    tree = policy.build(drafter, 0, 99, "cpu", stop=torch.tensor(sorted(stop)))
    expected, _, e_sub = brute_force(drafter, n, 0.0, max_depth, frozenset(stop))
    assert tree_paths(tree) == expected
    assert tree.p_hat[1:].sum().item() == pytest.approx(e_sub, rel=1e-5)


def test_tree_is_connected_with_products_along_paths():
    drafter = ScriptedDrafter(vocab_size=6, salt="c")
    tree = OptTreePolicy(OptTreeConfig(nodes=20, threshold=0.0, max_depth=6)).build(drafter, 0, 99, "cpu")
    assert tree.n_nodes == 21
    for node in range(1, tree.n_nodes):
        parent = tree.parents[node].item()
        assert 0 <= parent < node and tree.depth[node] == tree.depth[parent] + 1
        assert tree.p_hat[node].item() == pytest.approx(tree.p_hat[parent].item() * tree.q[node].item(), rel=1e-6)
        assert tree.p_hat[node] <= tree.p_hat[parent]


def test_threshold_one_stops_after_first_layer_and_depth_cap_is_honoured():
    drafter = ScriptedDrafter(vocab_size=6, salt="d")
    tree = OptTreePolicy(OptTreeConfig(nodes=10, threshold=1.0, max_depth=8)).build(drafter, 0, 99, "cpu")
    assert tree.max_depth == 1 and drafter.calls == 1
    drafter = ScriptedDrafter(vocab_size=6, salt="d")
    tree = OptTreePolicy(OptTreeConfig(nodes=10, threshold=0.0, max_depth=8)).build(drafter, 0, 2, "cpu")
    assert tree.max_depth <= 2 and drafter.calls <= 2
    assert OptTreePolicy(OptTreeConfig()).build(drafter, 7, 0, "cpu").tokens.tolist() == [7]


def test_chain_is_greedy_path_of_length_k():
    drafter = ScriptedDrafter(vocab_size=6, salt="e")
    tree = ChainPolicy(ChainConfig(length=4)).build(drafter, 0, 99, "cpu")
    assert tree.depth.tolist() == [0, 1, 2, 3, 4]
    path = ()
    for node in range(1, 5):
        assert tree.tokens[node].item() == drafter.probs(path).argmax().item()
        path += (tree.tokens[node].item(),)
    assert drafter.calls == 4


@pytest.mark.parametrize("params,needle", [
    (dict(nodes=0), "node budget"), (dict(threshold=-0.1), "threshold"), (dict(threshold=1.5), "threshold"),
    (dict(max_depth=0), "max depth"),
])
def test_bad_config_is_a_one_line_error(params, needle):
    with pytest.raises(OptTreeError) as err:
        OptTreeConfig(**params)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_unknown_policy_names_the_choices():
    with pytest.raises(OptTreeError, match="unknown policy 'bogus'.*chain.*opt-tree"):
        make_policy("bogus")
