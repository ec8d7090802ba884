"""The tree-policy zoo: shape invariants for every registered policy, greedy decoding equal to
plain greedy, and each structure against an independent reference on scripted distributions."""
import functools
import math

import pytest
import torch

from opttree_core.decoding import DecodeConfig, generate
from opttree_core.drafters import DraftLMDrafter
from opttree_core.errors import OptTreeError
from opttree_core.grow import ChildSampling
from opttree_core.policies import HardwareAware
from opttree_core.policies.auto import Profile
from opttree_core.policies.cum_logprob import CumLogProbConfig, CumLogProbPolicy
from opttree_core.policies.dynatree import DynaTreeConfig, DynaTreePolicy
from opttree_core.policies.eagle2 import Eagle2Config, Eagle2Policy
from opttree_core.policies.kary import BinaryTreeConfig, KAryConfig, KAryPolicy, full_tree_size
from opttree_core.policies.rank_paths import EAGLE_TREE, EagleStaticConfig, EagleStaticPolicy
from opttree_core.policies.registry import POLICIES, make_policy
from opttree_core.policies.registry import policy_for_budget as registered_policy
from opttree_core.records import StepRecord
from conftest import ScriptedDrafter, hf_greedy, perturbed_copy, random_prompt, tiny_model

NAMES = sorted(POLICIES)  # policies registered later are covered too
FLAT = Profile({"synthetic": True}, (1, 64), (0.01, 0.01), 0.001, (0.001, 0.001))


def policy_for_budget(name, nodes):
    """The registered policy; a hardware-aware one gets a flat cost profile (so it may use its
    whole budget) instead of measuring this machine, since these tests build trees directly."""
    policy = registered_policy(name, nodes)
    if isinstance(policy, HardwareAware):
        policy.use_profile(FLAT)
    return policy


def scripted(salt="z", vocab=8, sharpness=2.0):
    drafter = ScriptedDrafter(vocab_size=vocab, sharpness=sharpness, salt=salt)
    drafter.start(None)
    return drafter


def token_paths(tree):
    tokens = tree.tokens.tolist()
    return [tuple(tokens[i] for i in tree.path_to(node)) for node in range(1, tree.n_nodes)]


def rank_paths(tree):
    ranks = tree.rank.tolist()
    return [tuple(ranks[i] for i in tree.path_to(node)) for node in range(1, tree.n_nodes)]


def top(drafter, path, k):
    """The reference candidates below ``path``: (token, q) of the draft's top-k, best first."""
    q = drafter.probs(path)
    values, tokens = q.topk(min(k, q.numel()))
    return list(zip(tokens.tolist(), values.tolist()))


# ---------------------------------------------------------------- every policy

def check_shape(tree, policy, budget, depth_cap):
    n = tree.n_nodes
    assert tree.parents[0] == -1 and tree.depth[0] == 0
    for node in range(1, n):
        parent = int(tree.parents[node])
        assert 0 <= parent < node and tree.depth[node] == tree.depth[parent] + 1
        assert tree.p_hat[node].item() == pytest.approx(tree.p_hat[parent].item() * tree.q[node].item(), rel=1e-5)
    assert n - 1 <= policy.max_nodes and n - 1 <= budget
    assert tree.max_depth <= depth_cap
    assert torch.equal(tree.position_ids(17), tree.depth + 17)
    for node in range(n):
        kids = tree.tokens[tree.children(node)].tolist()
        assert len(kids) == len(set(kids)), f"siblings below node {node} repeat a token"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("budget", [1, 5, 40])
@pytest.mark.parametrize("depth_cap", [0, 2, 99])
def test_every_policy_builds_a_connected_tree_within_budget_and_depth_cap(name, budget, depth_cap):
    policy = policy_for_budget(name, budget)
    assert policy.max_nodes <= budget
    for children in (None, ChildSampling(torch.Generator().manual_seed(budget))):
        drafter = scripted(salt=name)
        policy.reset()
        tree = policy.build(drafter, 5, depth_cap, "cpu", children=children)
        check_shape(tree, policy, budget, depth_cap)
        assert drafter.calls <= depth_cap  # at most one draft forward per layer
        if depth_cap >= 1:
            assert tree.n_nodes >= 2  # every policy drafts at least one token when it may


@pytest.mark.parametrize("name", NAMES)
def test_for_budget_respects_the_budget(name):
    for budget in (1, 2, 3, 5, 8, 14, 25, 26, 60):
        policy = policy_for_budget(name, budget)
        tree = policy.build(scripted(salt=f"{name}{budget}"), 0, 99, "cpu")
        assert tree.n_nodes - 1 <= policy.max_nodes <= budget
    with pytest.raises(OptTreeError):
        POLICIES[name][1].for_budget(0)


@pytest.fixture(scope="module")
def models():
    return {seed: (tiny_model(seed), perturbed_copy(tiny_model(seed), seed, noise=0.05)) for seed in (0, 1)}


@functools.cache
def expected_greedy(seed: int, max_new: int) -> list[int]:
    return hf_greedy(tiny_model(seed), random_prompt(seed + 30, length=4 + seed), max_new)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("seed,budget,max_new,children", [
    (0, 5, 16, "top-k"), (0, 20, 3, "top-k"),
    pytest.param(1, 20, 16, "top-k", marks=pytest.mark.slow), pytest.param(1, 12, 12, "sampled", marks=pytest.mark.slow),
])
def test_greedy_decoding_with_every_policy_equals_hf_greedy(models, name, seed, budget, max_new, children):
    """Includes steps whose depth cap (tokens left - 1) is 2, 1 and 0, and sampled children."""
    target, draft = models[seed]
    prompt = random_prompt(seed + 30, length=4 + seed)
    result = generate(target, DraftLMDrafter(draft), policy_for_budget(name, budget), prompt,
                      DecodeConfig(max_new_tokens=max_new, children=children))
    assert result.token_ids == expected_greedy(seed, max_new)


# ---------------------------------------------------------------- k-ary

@pytest.mark.parametrize("k,depth", [(2, 3), (3, 2), (4, 3)])
def test_k_ary_tree_has_k_to_the_d_nodes_per_layer_and_the_top_k_below_each_node(k, depth):
    drafter = scripted(salt=f"k{k}")
    tree = KAryPolicy(KAryConfig(k=k, depth=depth)).build(drafter, 0, 99, "cpu")
    assert [int((tree.depth == d).sum()) for d in range(1, depth + 1)] == [k ** d for d in range(1, depth + 1)]
    paths = token_paths(tree)
    for node in range(tree.n_nodes):
        if tree.depth[node] < depth:
            below = [paths[c - 1][-1] for c in tree.children(node).tolist()]
            assert below == [tok for tok, _ in top(drafter, paths[node - 1] if node else (), k)]


def test_k_ary_node_cap_keeps_the_best_of_the_last_layer_and_binary_is_k_2():
    full = KAryPolicy(KAryConfig(k=2, depth=3)).build(scripted(salt="cap"), 0, 99, "cpu")
    capped = make_policy("binary", depth=3, nodes=10).build(scripted(salt="cap"), 0, 99, "cpu")
    last = sorted(((p, path) for p, path in zip(full.p_hat[1:].tolist(), token_paths(full)) if len(path) == 3),
                  reverse=True)
    expected = {path for path in token_paths(full) if len(path) < 3} | {path for _, path in last[:4]}
    assert set(token_paths(capped)) == expected
    assert BinaryTreeConfig.for_budget(10) == BinaryTreeConfig(depth=3, nodes=10)
    assert BinaryTreeConfig.for_budget(14) == BinaryTreeConfig(depth=3, nodes=14) and full_tree_size(2, 3) == 14
    assert KAryConfig.for_budget(2) == KAryConfig(k=3, depth=1, nodes=2)


# ---------------------------------------------------------------- EAGLE static

def test_eagle_static_reproduces_eagles_25_node_list():
    assert len(EAGLE_TREE) == 25 and EAGLE_TREE[:5] == ((0,), (1,), (2,), (3,), (0, 0))
    drafter = scripted(salt="eagle")
    tree = EagleStaticPolicy().build(drafter, 0, 99, "cpu")
    assert rank_paths(tree) == list(EAGLE_TREE)  # breadth-first, in EAGLE's own order
    paths = token_paths(tree)
    for path, ranks in zip(paths, EAGLE_TREE):
        assert path[-1] == top(drafter, path[:-1], ranks[-1] + 1)[ranks[-1]][0]  # the rank-r candidate
    assert drafter.calls == 5  # one forward per layer


def test_eagle_static_prefixes_and_depth_cap():
    for n in (1, 4, 7, 13, 24):
        tree = EagleStaticPolicy(EagleStaticConfig.for_budget(n)).build(scripted(), 0, 99, "cpu")
        assert rank_paths(tree) == list(EAGLE_TREE[:n])
    assert EagleStaticConfig.for_budget(60).nodes == 25
    tree = EagleStaticPolicy().build(scripted(), 0, 2, "cpu")
    assert rank_paths(tree) == [p for p in EAGLE_TREE if len(p) <= 2]


# ---------------------------------------------------------------- EAGLE-2

def eagle2_reference(drafter, depth, k, total):
    """All candidates EAGLE-2 drafts (top-k of the top-k nodes per layer), then the global top ``total``."""
    p_hat, frontier = {(): 1.0}, [()]
    for _ in range(depth):
        layer = {path + (tok,): p_hat[path] * q for path in frontier for tok, q in top(drafter, path, k)}
        p_hat.update(layer)
        frontier = sorted(layer, key=lambda path: -layer[path])[:k]
    ranked = sorted((kv for kv in p_hat.items() if kv[0]), key=lambda kv: (-kv[1], len(kv[0])))
    return {path for path, _ in ranked[:total]}


@pytest.mark.parametrize("depth,k,total,salt", [(3, 3, 8, "a"), (4, 2, 7, "b"), (5, 4, 30, "c"), (2, 5, 40, "d")])
def test_eagle2_keeps_the_global_top_total_tokens_of_its_candidates(depth, k, total, salt):
    drafter = scripted(salt=salt)
    tree = Eagle2Policy(Eagle2Config(depth=depth, top_k=k, total_tokens=total)).build(drafter, 0, 99, "cpu")
    assert set(token_paths(tree)) == eagle2_reference(drafter, depth, k, total)
    assert drafter.calls == depth


def test_eagle2_for_budget_draws_the_same_tree_as_the_paper_defaults():
    for n in (1, 3, 6, 10):
        small = Eagle2Policy(Eagle2Config.for_budget(n)).build(scripted(salt="e2"), 0, 99, "cpu")
        paper = Eagle2Policy(Eagle2Config(depth=6, top_k=10, total_tokens=n)).build(scripted(salt="e2"), 0, 99, "cpu")
        assert set(token_paths(small)) == set(token_paths(paper))


# ---------------------------------------------------------------- cumulative log-prob

def cum_logprob_reference(drafter, width, total, depth_cap=99):
    """Level by level: every level node proposes ``width`` candidates; keep the best by Σ log q."""
    score, level, chosen = {(): 0.0}, [()], []
    while len(chosen) < total and level and len(level[0]) < depth_cap:
        cands = {path + (tok,): score[path] + math.log(q) for path in level for tok, q in top(drafter, path, width)}
        level = sorted(cands, key=lambda path: -cands[path])[: min(width, total - len(chosen))]
        score.update(cands)
        chosen += level
    return set(chosen)


@pytest.mark.parametrize("width,total,cap,salt", [(1, 5, 99, "a"), (3, 10, 99, "b"), (4, 30, 99, "c"), (2, 9, 3, "d")])
def test_cum_logprob_levels_are_the_best_by_cumulative_log_prob(width, total, cap, salt):
    drafter = scripted(salt=salt)
    tree = CumLogProbPolicy(CumLogProbConfig(max_nodes_per_level=width, max_total_nodes=total)).build(
        drafter, 0, cap, "cpu")
    assert set(token_paths(tree)) == cum_logprob_reference(drafter, width, total, cap)
    assert CumLogProbConfig.for_budget(10) == CumLogProbConfig(max_nodes_per_level=4, max_total_nodes=10)


# ---------------------------------------------------------------- DynaTree

def dynatree_reference(drafter, c: DynaTreeConfig, base_depth, high_conf, deep, depth_cap=99):
    """DynaTree's Algorithm DraftTree: u0 = the draft's top-1 token alone at depth 1; a popped node is
    skipped (kept, not expanded) when p̂ < τ, p̂ < early_stop, or past base_depth with p̂ ≤ deep."""
    depth, p_hat, frontier, kept = min(c.max_depth, depth_cap), {(): 1.0}, [()], []
    for d in range(1, depth + 1):
        layer = []
        for path in frontier:
            top1 = drafter.probs(path).max().item()
            breadth = 1 if d == 1 else 1 if top1 > high_conf else 3 if top1 < c.low_conf else 2
            for tok, q in top(drafter, path, breadth):
                p_hat[path + (tok,)] = p_hat[path] * q
                layer.append(path + (tok,))
        layer = sorted(layer, key=lambda path: -p_hat[path])[: c.nodes - len(kept)]
        kept += layer
        frontier = [p for p in layer if p_hat[p] >= c.early_stop and p_hat[p] >= c.tau
                    and (d < base_depth or p_hat[p] > deep)]
        if len(kept) >= c.nodes or not frontier:
            break
    return set(kept)


CONFIGS = [DynaTreeConfig(), DynaTreeConfig(nodes=12, high_conf=0.6, low_conf=0.35, base_depth=2, max_depth=5),
           DynaTreeConfig(nodes=40, tau=0.0, early_stop=0.02, base_depth=3, deep_threshold=0.2)]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("sharpness,salt", [(1.0, "a"), (2.5, "b"), (4.0, "c")])
def test_dynatree_matches_its_reference(config, sharpness, salt):
    drafter = scripted(salt=salt, vocab=6, sharpness=sharpness)
    tree = DynaTreePolicy(config).build(drafter, 0, 99, "cpu")
    assert set(token_paths(tree)) == dynatree_reference(drafter, config, config.base_depth, config.high_conf,
                                                        config.deep_threshold)


def test_dynatree_breadth_follows_the_thresholds():
    config = DynaTreeConfig(nodes=200, high_conf=0.6, low_conf=0.35, tau=0.0, early_stop=0.0, base_depth=3,
                            max_depth=3)
    seen = set()
    for sharpness, salt in [(1.0, "a"), (2.5, "b"), (4.0, "c"), (2.0, "d")]:
        drafter = scripted(salt=salt, vocab=6, sharpness=sharpness)
        tree = DynaTreePolicy(config).build(drafter, 0, 99, "cpu")
        paths = token_paths(tree)
        assert len(tree.children(0)) == 1 and paths[0] == (top(drafter, (), 1)[0][0],)  # u0: the top-1 alone
        for node in range(1, tree.n_nodes):
            if tree.depth[node] < 3:
                top1 = drafter.probs(paths[node - 1]).max().item()
                breadth = len(tree.children(node))
                assert breadth == (1 if top1 > 0.6 else 3 if top1 < 0.35 else 2)
                seen.add(breadth)
    assert seen == {1, 2, 3}


def test_dynatree_keeps_a_node_below_tau_but_does_not_expand_it():
    """The paper's "continue": a node with p̂ < τ stays in the tree; only its children are skipped."""
    config = DynaTreeConfig(nodes=200, tau=0.3, early_stop=0.0, base_depth=6, max_depth=6)
    drafter = scripted(salt="t", vocab=6, sharpness=1.0)
    tree = DynaTreePolicy(config).build(drafter, 0, 99, "cpu")
    low = [v for v in range(1, tree.n_nodes) if tree.p_hat[v] < 0.3]
    assert low, "the case needs nodes below tau"
    assert all(len(tree.children(v)) == 0 for v in low)
    assert all(tree.p_hat[tree.parents[v]] >= 0.3 for v in low if tree.parents[v] > 0)


def observed(tree, accept_length):
    """The step record ``generate`` hands ``observe``: the tree and A (the rest unused here)."""
    return StepRecord(0, tree, None, None, [0] * accept_length)


def test_dynatree_history_changes_the_next_tree_and_reset_clears_it():
    config = DynaTreeConfig(nodes=60, base_depth=2, max_depth=6, deep_threshold=0.9, history_window=2, min_history=1)
    policy, drafter = DynaTreePolicy(config), scripted(salt="h", vocab=6, sharpness=3.0)
    first = policy.build(drafter, 0, 99, "cpu")
    policy.observe(observed(first, first.max_depth + 1))  # everything accepted: more aggressive
    assert (policy.base_depth, policy.high_conf, policy.deep_threshold) == (3, pytest.approx(0.75), pytest.approx(0.85))
    deeper = policy.build(drafter, 0, 99, "cpu")
    assert set(token_paths(deeper)) == dynatree_reference(drafter, config, 3, 0.75, 0.85)
    assert set(token_paths(deeper)) != set(token_paths(first)) and deeper.max_depth > first.max_depth
    policy.observe(observed(deeper, 1))  # nothing accepted: the window's mean (1 + 0) / 2 is below target - 0.1
    assert (policy.base_depth, policy.high_conf) == (2, pytest.approx(0.8))
    policy.observe(observed(deeper, 1))
    assert (policy.base_depth, policy.high_conf) == (1, pytest.approx(0.85))
    policy.reset()
    assert (policy.base_depth, policy.high_conf, len(policy.rates)) == (2, 0.8, 0)
    assert token_paths(policy.build(drafter, 0, 99, "cpu")) == token_paths(first)


# ---------------------------------------------------------------- configs

@pytest.mark.parametrize("bad", [
    lambda: KAryConfig(k=0), lambda: KAryConfig(depth=2.5), lambda: BinaryTreeConfig(nodes=0),
    lambda: EagleStaticConfig(nodes=26), lambda: Eagle2Config(top_k=0), lambda: Eagle2Config(total_tokens=-1),
    lambda: CumLogProbConfig(max_total_nodes=0), lambda: DynaTreeConfig(low_conf=0.9),
    lambda: DynaTreeConfig(tau=1.5), lambda: DynaTreeConfig(base_depth=9), lambda: DynaTreeConfig(min_history=11),
    lambda: make_policy("binary", k=3),
])
def test_bad_configs_raise_one_line_errors(bad):
    with pytest.raises(OptTreeError) as err:
        bad()
    assert "\n" not in str(err.value)
