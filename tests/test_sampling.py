"""Lossless sampling: tree verification keeps the target's distribution exactly."""
import pytest
import torch
from scipy.stats import chisquare

from opttree_core.decoding import DecodeConfig, generate
from opttree_core.draft_vocab import DraftVocab
from opttree_core.drafters import DraftLMDrafter
from opttree_core.errors import OptTreeError
from opttree_core.policies import OptTreeConfig, OptTreePolicy
from opttree_core.sampling import sample_path, target_probs
from opttree_core.grow import ChildSampling, TreeBuilder
from opttree_core.tree import DraftTree
from conftest import first_two_tokens_pvalue, hf_greedy, perturbed_copy, random_prompt, tiny_model

V = 6
# Root's children: tokens 0, 1, 2 (in draft-rank order); token 0 has children 3 and 4.
TREE = DraftTree.from_paths(5, [[0, 3], [0, 4], [1], [2]])
PROBS = torch.tensor([
    [0.30, 0.05, 0.25, 0.10, 0.20, 0.10],  # root (node 0)
    [0.05, 0.15, 0.10, 0.40, 0.10, 0.20],  # after token 0 (node 1)
    *[[1 / V] * V] * 5,
])


def first_two(n: int, seed: int, probs=PROBS):
    """Emitted tokens of ``n`` draws: (first token, second token or -1 when the step ended)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = TREE.tokens.tolist()
    out = []
    for _ in range(n):
        path, bonus = sample_path(TREE, probs, gen)
        emitted = [tokens[i] for i in path] + [bonus]
        out.append((emitted[0], emitted[1] if len(emitted) > 1 and emitted[0] == 0 else -1))
    return out


def test_hand_made_tree_emits_the_target_distribution():
    draws = first_two(80000, seed=0)
    first = torch.bincount(torch.tensor([a for a, _ in draws]), minlength=V).float()
    assert chisquare(first.numpy(), (PROBS[0] * len(draws)).numpy()).pvalue > 1e-3
    second = torch.bincount(torch.tensor([b for a, b in draws if a == 0]), minlength=V).float()
    assert chisquare(second.numpy(), (PROBS[1] * second.sum()).numpy()).pvalue > 1e-3


def test_the_check_is_strong_enough_to_catch_a_small_bias():
    """A verifier that over-accepts the first child by 1 % (absolute) fails the same test."""
    biased = PROBS.clone()
    biased[0, 0] += 0.01
    biased[0] /= biased[0].sum()
    draws = first_two(80000, seed=1, probs=biased)
    first = torch.bincount(torch.tensor([a for a, _ in draws]), minlength=V).float()
    assert chisquare(first.numpy(), (PROBS[0] * len(draws)).numpy()).pvalue < 1e-3


# Sampled children: the draft q differs from the target p on purpose; V tokens, target p depends
# only on the previous token (TARGET[t] = p after token t), draft q likewise (DRAFT[t]).
TARGET = torch.softmax(torch.randn(V + 1, V, generator=torch.Generator().manual_seed(5)) * 1.2, dim=1)
DRAFT = torch.softmax(torch.randn(V + 1, V, generator=torch.Generator().manual_seed(6)) * 1.2, dim=1)
ROOT = V  # the root token indexes the last row


def sampled_tree(gen: torch.Generator) -> DraftTree:
    """Root draws 3 children from q and keeps the 2 of largest q (a choice that depends on the draws);
    each kept child draws 2 and keeps 1. Verification must still emit exactly p."""
    builder = TreeBuilder(ROOT, max_depth=2, device="cpu", children=ChildSampling(gen))
    layer = builder.add_best(builder.root, DRAFT[ROOT][None], per_node=3, budget=2)
    builder.add_best(layer, DRAFT[builder.tokens[layer]], per_node=2, budget=1)
    return builder.whole_tree()


def quick_sampled_tree(gen: torch.Generator) -> DraftTree:
    """The same shape as ``sampled_tree``, assembled directly (the builder is too slow for 60k trees)."""
    sampler = ChildSampling(gen)
    root_draws = sampler.draw(DRAFT[ROOT][None], 3)[0]  # (3,)
    kept = sorted(root_draws[DRAFT[ROOT][root_draws].topk(2).indices].tolist(), key=root_draws.tolist().index)
    tokens, parents, draws, probs = [ROOT], [-1], [root_draws.tolist()], [DRAFT[ROOT]]
    for token in kept:
        tokens.append(token), parents.append(0), draws.append([-1] * 3), probs.append(torch.zeros(V))
    for i, token in enumerate(kept, start=1):
        child_draws = sampler.draw(DRAFT[token][None], 2)[0]
        draws[i], probs[i] = child_draws.tolist() + [-1], DRAFT[token]
        best = int(child_draws[DRAFT[token][child_draws].argmax()])
        tokens.append(best), parents.append(i), draws.append([-1] * 3), probs.append(torch.zeros(V))
    n = len(tokens)
    long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    depth = long([0] + [1] * len(kept) + [2] * len(kept))
    ones = torch.ones(n)
    return DraftTree(long(tokens), long(parents), depth, ones, ones, torch.zeros(n, dtype=torch.long),
                     draws=long(draws), draft_probs=torch.stack(probs))


def first_two_sampled(n: int, seed: int, target=TARGET):
    """(first, second) emitted tokens of n independent steps over freshly drawn trees."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        tree = quick_sampled_tree(gen)
        path, bonus = sample_path(tree, target[tree.tokens], gen)
        emitted = [int(tree.tokens[i]) for i in path] + [bonus]
        out.append((emitted[0], emitted[1] if len(emitted) > 1 else -1))
    return out


def test_sampled_children_are_draws_and_are_recorded():
    tree = sampled_tree(torch.Generator().manual_seed(0))
    assert tree.sampled_children and tree.draws.shape == (tree.n_nodes, 3)
    root_draws = tree.draws[0].tolist()
    kids = tree.children(0).tolist()
    assert len(set(root_draws)) == 3 and {int(tree.tokens[c]) for c in kids} <= set(root_draws)
    assert [r for r in tree.rank[kids].tolist()] == sorted(root_draws.index(int(tree.tokens[c])) for c in kids)
    torch.testing.assert_close(tree.draft_probs[0], DRAFT[ROOT])


@pytest.mark.slow
def test_sampled_children_emit_the_target_distribution():
    draws = first_two_sampled(60000, seed=0)
    first = torch.bincount(torch.tensor([a for a, _ in draws]), minlength=V).float()
    assert chisquare(first.numpy(), (TARGET[ROOT] * len(draws)).numpy()).pvalue > 1e-3
    for token in range(V):  # the second token, after each first token that was a kept child or not
        second = torch.bincount(torch.tensor([b for a, b in draws if a == token and b >= 0], dtype=torch.long),
                                minlength=V).float()
        if second.sum() > 2000:
            assert chisquare(second.numpy(), (TARGET[token] * second.sum()).numpy()).pvalue > 1e-3


@pytest.mark.slow
def test_sampled_children_check_catches_a_one_percent_bias():
    biased = TARGET.clone()
    biased[ROOT, 0] += 0.01
    biased[ROOT] /= biased[ROOT].sum()
    draws = first_two_sampled(60000, seed=1, target=biased)
    first = torch.bincount(torch.tensor([a for a, _ in draws]), minlength=V).float()
    assert chisquare(first.numpy(), (TARGET[ROOT] * len(draws)).numpy()).pvalue < 1e-3


def test_top_k_and_top_p_processing():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    torch.testing.assert_close(target_probs(logits, 1.0), torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    torch.testing.assert_close(target_probs(logits, 1.0, top_k=2), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    torch.testing.assert_close(target_probs(logits, 1.0, top_p=0.7), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))


@pytest.mark.parametrize("draft_vocab", [None, (0, 2, 3, 5, 6)], ids=["full-vocab", "draft-vocab"])
@pytest.mark.parametrize("children", ["top-k", "sampled"])
def test_tree_sampling_matches_plain_sampling_end_to_end(children, draft_vocab):
    """First two generated tokens of a tiny model: tree sampling vs plain sampling, 2-sample chi-square.
    With a draft vocabulary the drafter cannot propose tokens 1, 4, 7, which must still come out as often."""
    target = tiny_model(3, vocab_size=8, init_range=0.4)
    vocab = None if draft_vocab is None else DraftVocab(torch.tensor(draft_vocab), 8)
    drafter = DraftLMDrafter(perturbed_copy(target, 3, noise=0.3), vocab=vocab)
    policy = OptTreePolicy(OptTreeConfig(nodes=4, threshold=0.0, max_depth=3))
    prompt = random_prompt(3, length=4, vocab_size=8)
    assert first_two_tokens_pvalue(target, drafter, policy, prompt, runs=1500, children=children) > 1e-3


def test_sampling_is_reproducible_with_a_seed():
    target = tiny_model(4, vocab_size=16)
    drafter = DraftLMDrafter(perturbed_copy(target, 4, noise=0.1))
    policy = OptTreePolicy(OptTreeConfig(nodes=6, threshold=0.0, max_depth=3))
    config = DecodeConfig(max_new_tokens=20, temperature=0.8, top_p=0.9, seed=7, stop_at_eos=False)
    runs = [generate(target, drafter, policy, random_prompt(4, vocab_size=16), config).token_ids for _ in range(2)]
    assert runs[0] == runs[1]


def test_greedy_with_sampled_children_equals_plain_greedy():
    target = tiny_model(5, vocab_size=32)
    drafter = DraftLMDrafter(perturbed_copy(target, 5, noise=0.2))
    policy = OptTreePolicy(OptTreeConfig(nodes=8, threshold=0.0, max_depth=4))
    for seed in range(3):
        prompt = random_prompt(seed, vocab_size=32)
        config = DecodeConfig(max_new_tokens=24, children="sampled", seed=seed, stop_at_eos=False)
        assert generate(target, drafter, policy, prompt, config).token_ids == hf_greedy(target, prompt, 24)


@pytest.mark.parametrize("children", ["top-k", "sampled"])
def test_sampled_children_are_reproducible_with_a_seed(children):
    target = tiny_model(4, vocab_size=16)
    drafter = DraftLMDrafter(perturbed_copy(target, 4, noise=0.1))
    policy = OptTreePolicy(OptTreeConfig(nodes=6, threshold=0.0, max_depth=3))
    config = DecodeConfig(max_new_tokens=20, temperature=0.8, seed=3, stop_at_eos=False, children=children)
    runs = [generate(target, drafter, policy, random_prompt(4, vocab_size=16), config).token_ids for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("params,needle", [(dict(temperature=-1.0), "temperature"), (dict(top_p=0.0), "top_p"),
                                           (dict(top_k=-2), "top_k"), (dict(children="random"), "children")])
def test_bad_sampling_settings_are_one_line_errors(params, needle):
    with pytest.raises(OptTreeError, match=needle):
        DecodeConfig(**params)
