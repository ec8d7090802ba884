"""Tree decoding is lossless for greedy: token for token equal to plain greedy decoding."""
import pytest
import torch
from transformers import DynamicCache

from opttree_core.decoding import DecodeConfig, generate, generate_autoregressive
from opttree_core.drafters import DraftLMDrafter, self_drafter
from opttree_core.modelcall import forward
from opttree_core.policies import ChainConfig, ChainPolicy, OptTreeConfig, OptTreePolicy
from opttree_core.tree import DraftTree
from conftest import hf_greedy, perturbed_copy, random_prompt, tiny_model, tree_and_path_logits
from golden import make_policy

GRID = [(seed, n, depth, delta) for seed in range(6) for n, depth, delta in
        ((1, 1, 0.0), (4, 3, 0.0), (8, 6, 0.1), (24, 4, 0.0), (50, 10, 0.5))]


@pytest.fixture(scope="module")
def models():
    return {seed: (tiny_model(seed), perturbed_copy(tiny_model(seed), seed, noise=0.05)) for seed in range(6)}


@pytest.mark.parametrize("seed,n,depth,delta", GRID)
def test_opt_tree_equals_hf_greedy(models, seed, n, depth, delta):
    target, draft = models[seed]
    prompt = random_prompt(seed, length=3 + seed)
    expected = hf_greedy(target, prompt, 40)
    policy = OptTreePolicy(OptTreeConfig(nodes=n, threshold=delta, max_depth=depth))
    result = generate(target, DraftLMDrafter(draft), policy, prompt, DecodeConfig(max_new_tokens=40))
    assert result.token_ids == expected
    assert sum(result.accept_lengths) == len(expected)


@pytest.mark.parametrize("seed", range(4))
def test_chain_and_autoregressive_equal_hf_greedy(models, seed):
    target, draft = models[seed]
    prompt = random_prompt(100 + seed)
    expected = hf_greedy(target, prompt, 32)
    chain = generate(target, DraftLMDrafter(draft), ChainPolicy(ChainConfig(3)), prompt, DecodeConfig(max_new_tokens=32))
    assert chain.token_ids == expected
    assert generate_autoregressive(target, prompt, DecodeConfig(max_new_tokens=32)).token_ids == expected


def test_a_useful_draft_gets_multi_token_steps(models):
    target, draft = models[0]
    result = generate(target, DraftLMDrafter(draft), OptTreePolicy(OptTreeConfig(nodes=16, threshold=0.0, max_depth=5)),
                      random_prompt(0), DecodeConfig(max_new_tokens=48, stop_at_eos=False))
    assert result.mal > 1.5  # the noisy copy agrees often, so acceptance is real


def test_self_draft_accepts_the_draft_greedy_chain_every_step():
    target = tiny_model(1, init_range=0.6)  # peaked: the greedy chain often fills the whole depth
    depth = 5
    seen = []
    policy = OptTreePolicy(OptTreeConfig(nodes=12, threshold=0.0, max_depth=depth))

    def check(record):
        tree = record.tree
        greedy_chain, node = [], 0
        while True:  # follow the draft's top-1 child down the tree
            top = [c for c in tree.children(node).tolist() if tree.rank[c] == 0]
            if not top:
                break
            node = top[0]
            greedy_chain.append(node)
        path = [v for v in range(1, tree.n_nodes) if record.accepted[v]]
        assert path == greedy_chain
        seen.append((record.a, tree.max_depth, len(greedy_chain)))

    generate(target, self_drafter(target), policy, random_prompt(7), DecodeConfig(max_new_tokens=60, stop_at_eos=False),
             on_step=check)
    assert all(a == chain + 1 for a, _, chain in seen)
    assert any(a == d + 1 == depth + 1 for a, d, _ in seen)


def test_self_draft_chain_accepts_full_depth(target):
    lengths = generate(target, self_drafter(target), ChainPolicy(ChainConfig(4)), random_prompt(8),
                       DecodeConfig(max_new_tokens=50, stop_at_eos=False)).accept_lengths
    assert lengths[:-1] == [5] * (len(lengths) - 1)
    assert sum(lengths) == 50


def test_every_node_logit_equals_sequential_decoding_of_its_path(target):
    paths = [[5, 6, 7, 8, 9], [5, 6, 10], [5, 11, 12, 13], [14, 15, 16, 17], [14, 18], [19]]
    tree = DraftTree.from_paths(20, paths)
    assert tree.max_depth >= 4 and (tree.parents == 0).sum() == 3
    logits, references = tree_and_path_logits(target, torch.cat([random_prompt(3, length=9), torch.tensor([20])]), tree)
    for node, reference in enumerate(references):
        torch.testing.assert_close(logits[node], reference, atol=1e-4, rtol=0)


def test_draft_cache_stays_consistent_with_the_accepted_sequence(models):
    target, draft = models[1]
    drafter = DraftLMDrafter(draft)
    prompt = random_prompt(11)
    result = generate(target, drafter, OptTreePolicy(OptTreeConfig(nodes=10, threshold=0.0, max_depth=4)), prompt,
                      DecodeConfig(max_new_tokens=30, stop_at_eos=False))
    sequence = prompt.tolist() + result.token_ids[:-1]  # the drafter has committed all but the final step
    in_cache = drafter.committed
    fresh = DynamicCache(config=draft.config)
    forward(draft, fresh, torch.tensor(sequence[:in_cache]), torch.arange(in_cache))
    for got, want in zip(drafter.cache.layers, fresh.layers):
        torch.testing.assert_close(got.keys, want.keys, atol=1e-5, rtol=0)
        torch.testing.assert_close(got.values, want.values, atol=1e-5, rtol=0)


def test_max_new_tokens_is_never_exceeded(models):
    target, draft = models[2]
    for limit in (1, 2, 3, 7):
        result = generate(target, self_drafter(target), OptTreePolicy(OptTreeConfig(nodes=8, threshold=0.0, max_depth=6)),
                          random_prompt(5), DecodeConfig(max_new_tokens=limit, stop_at_eos=False))
        assert len(result.token_ids) == limit


def test_eos_inside_the_accepted_path_ends_generation():
    target = tiny_model(4)
    prompt = random_prompt(4)
    free = generate_autoregressive(target, prompt, DecodeConfig(max_new_tokens=30, stop_at_eos=False)).token_ids
    eos = free[6]  # pretend a token the self-draft will accept mid-path is the EOS
    target.generation_config.eos_token_id = eos
    try:
        result = generate(target, self_drafter(target), ChainPolicy(ChainConfig(5)), prompt, DecodeConfig(max_new_tokens=30))
    finally:
        target.generation_config.eos_token_id = 2
    assert result.token_ids == free[: free.index(eos) + 1]


@pytest.mark.parametrize("policy", ["opt-tree", "opt-tree-auto", "dynatree", "chain"])
def test_no_tree_is_drafted_below_the_end_of_sequence(policy):
    """The self-draft proposes the target's own path, EOS and what follows it: the policies that
    choose their frontier on the host give an EOS node no children (a static chain keeps its
    shape, which shows the case arises), and the output is plain greedy's up to the EOS."""
    target = tiny_model(4)
    prompt = random_prompt(4)
    free = generate_autoregressive(target, prompt, DecodeConfig(max_new_tokens=30, stop_at_eos=False)).token_ids
    eos = free[6]
    trees = []
    target.generation_config.eos_token_id = eos
    try:
        result = generate(target, self_drafter(target), make_policy(policy, 8), prompt,
                          DecodeConfig(max_new_tokens=30), on_step=lambda record: trees.append(record.tree))
    finally:
        target.generation_config.eos_token_id = 2
    assert result.token_ids == free[: free.index(eos) + 1]
    below_eos = sum(int((tree.tokens[tree.parents[1:]] == eos).sum()) for tree in trees)
    assert (below_eos > 0) if policy == "chain" else (below_eos == 0)


def test_max_time_stops_after_the_step_that_ran_out(models):
    target, draft = models[3]
    policy = OptTreePolicy(OptTreeConfig(nodes=8, threshold=0.0, max_depth=4))
    config = DecodeConfig(max_new_tokens=40, max_time=1e-9, stop_at_eos=False)
    tree = generate(target, DraftLMDrafter(draft), policy, random_prompt(9), config)
    assert tree.steps == 1 and 1 <= len(tree.token_ids) <= 5
    assert tree.token_ids == hf_greedy(target, random_prompt(9), 40)[: len(tree.token_ids)]
    assert len(generate_autoregressive(target, random_prompt(9), config).token_ids) == 1
