"""NGramDrafter: prompt lookup with real distributions (hand-made answers, a brute-force
reference, tree contexts, incremental commits, and lossless decoding end to end)."""
from collections import Counter

import pytest
import torch
from conftest import hf_greedy, random_prompt, tiny_model

from opttree_core.decoding import DecodeConfig, generate
from opttree_core.drafters import Drafter
from opttree_core.errors import OptTreeError
from opttree_core.drafters.ngram import NGramConfig, NGramDrafter
from opttree_core.policies import ChainConfig, ChainPolicy, OptTreeConfig, OptTreePolicy
from opttree_core.grow import TreeBuilder

V = 20
EXACT = NGramConfig(backoff=0.0, floor=0.0)  # q = normalised counts of the longest matching order


def root_q(prompt, config=EXACT, vocab=V):
    drafter = NGramDrafter(vocab, config)
    drafter.start(torch.tensor(prompt))
    return drafter.root_probs()


def support(q):
    return {int(t): round(float(q[t]), 6) for t in q.nonzero().flatten()}


def test_is_a_drafter_and_rows_are_float32_distributions():
    drafter = NGramDrafter(V)
    assert isinstance(drafter, Drafter)
    drafter.start(torch.tensor([5, 6, 7, 8, 5, 6]))
    q = drafter.root_probs()
    assert q.shape == (V,) and q.dtype == torch.float32 and q.device.type == "cpu"
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-6)


def test_longest_match_puts_all_mass_on_its_continuation():
    assert support(root_q([5, 6, 7, 8, 5, 6])) == {7: 1.0}


def test_floor_keeps_every_token_positive():
    eps = 1e-2
    q = root_q([5, 6, 7, 8, 5, 6], NGramConfig(floor=eps))
    assert float(q.min()) == pytest.approx(eps / V)
    assert float(q[7]) == pytest.approx(1 - eps + eps / V)
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-6)


def test_mixed_continuations_give_count_proportions():
    # (1, 2) was followed by 3, 4, 3; the longer suffix (9, 1, 2) never occurred before
    assert support(root_q([1, 2, 3, 1, 2, 4, 1, 2, 3, 9, 1, 2])) == {3: round(2 / 3, 6), 4: round(1 / 3, 6)}


def test_backs_off_to_shorter_ngrams():
    # (9, 4) never occurred before, (4) was followed by 5 and 6
    assert support(root_q([3, 4, 5, 7, 4, 6, 9, 4])) == {5: 0.5, 6: 0.5}


def test_backoff_weight_blends_lower_orders():
    # order 2: (1, 2) -> {3}; order 1: (2) -> {3, 5}; q = 0.75 P_2 + 0.25 P_1
    q = root_q([1, 2, 3, 9, 2, 5, 1, 2], NGramConfig(max_n=4, backoff=0.25, floor=0.0))
    assert support(q) == {3: 0.875, 5: 0.125}


def test_min_n_ignores_shorter_matches():
    assert support(root_q([3, 4, 5, 7, 4, 6, 9, 4], NGramConfig(min_n=2, backoff=0.0, floor=0.0))) == {
        t: 1 / V for t in range(V)}


def test_uniform_when_nothing_matches():
    q = root_q([1, 2, 3, 4])
    assert torch.allclose(q, torch.full((V,), 1 / V))
    assert torch.allclose(root_q([7]), torch.full((V,), 1 / V))  # a one-token prompt has no earlier occurrence


def reference_q(context, config, vocab):
    """The module docstring's formula, computed naively from the whole context."""
    counts = {}
    for n in range(config.min_n, min(config.max_n, len(context)) + 1):
        suffix = context[len(context) - n:]
        c = Counter(context[i] for i in range(n, len(context)) if context[i - n:i] == suffix)
        if c:
            counts[n] = c
    if not counts:
        return torch.full((vocab,), 1 / vocab, dtype=torch.float64)
    n_star, beta, q = max(counts), config.backoff, torch.zeros(vocab, dtype=torch.float64)
    for n in range(config.min_n, n_star + 1):
        w = beta ** (n_star - n) * (1.0 if n == config.min_n else 1.0 - beta)
        for token, c in counts[n].items():
            q[token] += w * c / sum(counts[n].values())
    return (1 - config.floor) * q + config.floor / vocab


def random_layers(root, vocab, gen, layers=4, width=6):
    """A random tree grown layer by layer, as the growth loop does: yields (builder, layer) after
    adding each layer, for the drafter to be fed that layer."""
    builder = TreeBuilder(root, max_depth=layers, device="cpu")
    frontier = builder.layers[0]
    for _ in range(layers):
        parents = frontier[torch.randint(len(frontier), (width,), generator=gen)].sort().values
        tokens = torch.randint(vocab, (width,), generator=gen)
        frontier = builder.add_layer(parents, tokens, torch.full((width,), 0.5), torch.zeros(width, dtype=torch.long))
        yield builder, frontier


@pytest.mark.parametrize("seed,config", [
    (0, NGramConfig()), (1, NGramConfig(max_n=3, backoff=0.3, floor=0.05)),
    (2, NGramConfig(max_n=6, min_n=2, backoff=0.0)), (3, NGramConfig(max_n=2, min_n=2, backoff=0.5, floor=0.0))])
def test_matches_brute_force_reference_on_random_trees(seed, config):
    vocab, gen = 5, torch.Generator().manual_seed(seed)  # a small vocabulary: many matches of every order
    seq = torch.randint(vocab, (9,), generator=gen).tolist()
    drafter = NGramDrafter(vocab, config)
    drafter.start(torch.tensor(seq))
    for step in range(4):
        assert torch.allclose(drafter.root_probs().double(), reference_q(seq, config, vocab), atol=1e-6)
        for builder, nodes in random_layers(seq[-1], vocab, gen):
            probs = drafter.expand(builder.feed(nodes))  # (n_nodes, vocab)
            for row, node in zip(probs, nodes.tolist()):
                path = builder.tokens[[a for a in builder.path[node].tolist() if a > 0]].tolist()
                assert torch.allclose(row.double(), reference_q(seq + path, config, vocab), atol=1e-6)
        new = torch.randint(vocab, (1 + step,), generator=gen).tolist()
        drafter.commit(new)
        seq += new


def test_expand_uses_each_nodes_own_path():
    drafter = NGramDrafter(V, EXACT)
    drafter.start(torch.tensor([5, 6, 7, 8, 9]))
    builder = TreeBuilder(9, max_depth=3, device="cpu")
    one = torch.tensor
    first = builder.add_layer(one([0, 0]), one([5, 1]), one([0.5, 0.5]), one([0, 1]))
    rows = [drafter.expand(builder.feed(first))]
    second = builder.add_layer(one([1, 1, 2]), one([6, 2, 2]), one([0.5, 0.5, 0.5]), one([0, 1, 0]))
    rows.append(drafter.expand(builder.feed(second)))
    third = builder.add_layer(one([5]), one([2]), one([0.5]), one([0]))
    probs = torch.cat(rows + [drafter.expand(builder.feed(third))])  # (6, V)
    uniform = torch.full((V,), 1 / V)
    assert support(probs[0]) == {6: 1.0}  # ...8, 9, 5     -> (5) was followed by 6
    assert torch.allclose(probs[1], uniform)  # ...9, 1: token 1 never occurred
    assert support(probs[2]) == {7: 1.0}  # ...9, 5, 6     -> (5, 6) was followed by 7
    assert torch.allclose(probs[3], uniform)  # ...9, 5, 2: sibling paths don't leak
    assert torch.allclose(probs[4], uniform)  # ...9, 1, 2
    assert support(probs[5]) == {2: 1.0}  # ...9, 1, 2, 2  -> (2) was followed by 2 inside the path
    assert torch.allclose(probs.sum(1), torch.ones(6))


def test_occurrence_that_starts_in_the_prompt_and_ends_in_the_path():
    drafter = NGramDrafter(V, EXACT)
    drafter.start(torch.tensor([1, 2]))
    builder = TreeBuilder(2, max_depth=3, device="cpu")
    node = builder.layers[0]
    for token in (3, 1, 2):
        node = builder.add_layer(node, torch.tensor([token]), torch.ones(1), torch.zeros(1, dtype=torch.long))
    assert support(drafter.expand(builder.feed(node))[0]) == {3: 1.0}  # (1, 2) was followed by the path's 3


def test_commit_updates_the_index():
    drafter = NGramDrafter(V, EXACT)
    drafter.start(torch.tensor([1, 2, 3]))
    drafter.commit([10, 11, 12])
    assert torch.allclose(drafter.root_probs(), torch.full((V,), 1 / V))  # 12 never occurred before
    drafter.commit([10])
    assert support(drafter.root_probs()) == {11: 1.0}  # (12, 10) never did, (10) -> 11 did
    drafter.commit([11, 13, 10, 11])
    assert support(drafter.root_probs()) == {12: 0.5, 13: 0.5}  # (10, 11) -> 12 and 13
    drafter.start(torch.tensor([10, 11, 14, 10, 11]))  # start forgets the previous sequence
    assert support(drafter.root_probs()) == {14: 1.0}


@pytest.mark.parametrize("kwargs", [{"max_n": 0}, {"min_n": 0}, {"min_n": 3, "max_n": 2}, {"max_n": 2.5},
                                    {"backoff": 1.0}, {"backoff": -0.1}, {"floor": 1.0}, {"floor": -1e-3}])
def test_bad_config_is_a_one_line_error(kwargs):
    with pytest.raises(OptTreeError) as err:
        NGramConfig(**kwargs)
    assert "\n" not in str(err.value)


def test_misuse_is_a_one_line_error():
    with pytest.raises(OptTreeError, match="vocab_size"):
        NGramDrafter(0)
    drafter = NGramDrafter(V)
    with pytest.raises(OptTreeError, match="before start"):
        drafter.root_probs()
    with pytest.raises(OptTreeError, match="at least one"):
        drafter.start(torch.tensor([], dtype=torch.long))
    with pytest.raises(OptTreeError, match="outside"):
        drafter.start(torch.tensor([1, V]))
    drafter.start(torch.tensor([1, 2]))
    with pytest.raises(OptTreeError, match="outside"):
        drafter.commit([3, -1])
    assert drafter.seq == [1, 2]  # a rejected commit changes nothing


def repetitive_prompt(seed):
    span = random_prompt(seed, length=5)
    return torch.cat([span, random_prompt(50 + seed, length=3), span, span[:2]])


@pytest.mark.parametrize("seed,n,depth,delta", [(0, 4, 3, 0.0), (1, 8, 6, 0.1), (2, 16, 4, 0.0), (3, 1, 1, 0.0)])
def test_opt_tree_with_ngram_drafter_equals_hf_greedy(seed, n, depth, delta):
    target, prompt = tiny_model(seed), repetitive_prompt(seed)
    policy = OptTreePolicy(OptTreeConfig(nodes=n, threshold=delta, max_depth=depth))
    result = generate(target, NGramDrafter(target.config.vocab_size), policy, prompt, DecodeConfig(max_new_tokens=40))
    assert result.token_ids == hf_greedy(target, prompt, 40)


def test_chain_with_ngram_drafter_equals_hf_greedy():
    target, prompt = tiny_model(4), repetitive_prompt(4)
    result = generate(target, NGramDrafter(target.config.vocab_size), ChainPolicy(ChainConfig(4)), prompt,
                      DecodeConfig(max_new_tokens=40))
    assert result.token_ids == hf_greedy(target, prompt, 40)


def copying_model(seed):
    """A tiny Llama whose attention output is zeroed: its greedy next token is a function of the
    current token alone, so its greedy output falls into a cycle that lookup can copy."""
    model = tiny_model(seed)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
    return model


def test_lookup_of_a_repeated_span_accepts_many_tokens_per_step():
    target = copying_model(0)
    start = random_prompt(0, length=8)
    prompt = torch.cat([start, torch.tensor(hf_greedy(target, start, 16))])  # the prompt already holds the cycle
    expected = hf_greedy(target, prompt, 60)
    assert len(expected) == 60  # no EOS: every step can copy
    policy = OptTreePolicy(OptTreeConfig(nodes=8, threshold=0.0, max_depth=5))
    result = generate(target, NGramDrafter(target.config.vocab_size), policy, prompt, DecodeConfig(max_new_tokens=60))
    assert result.token_ids == expected
    assert result.mal > 4.0
