"""Lossless sampling: tree verification keeps the target's distribution exactly."""
import pytest
import torch
from scipy.stats import chi2_contingency, chisquare

from opttree_core.decoding import DecodeConfig, generate, generate_autoregressive
from opttree_core.drafters import DraftLMDrafter
from opttree_core.errors import OptTreeError
from opttree_core.policies import OptTreeConfig, OptTreePolicy
from opttree_core.sampling import sample_path, target_probs
from opttree_core.tree import DraftTree
from conftest import perturbed_copy, random_prompt, tiny_model

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
    draws = first_two(40000, seed=0)
    first = torch.bincount(torch.tensor([a for a, _ in draws]), minlength=V).float()
    assert chisquare(first.numpy(), (PROBS[0] * len(draws)).numpy()).pvalue > 1e-3
    second = torch.bincount(torch.tensor([b for a, b in draws if a == 0]), minlength=V).float()
    assert chisquare(second.numpy(), (PROBS[1] * second.sum()).numpy()).pvalue > 1e-3


def test_the_check_is_strong_enough_to_catch_a_small_bias(monkeypatch):
    """A verifier that over-accepts the first child by ~1.5 % (absolute) fails the same test."""
    biased = PROBS.clone()
    biased[0, 0] += 0.015
    biased[0] /= biased[0].sum()
    draws = first_two(40000, seed=1, probs=biased)
    first = torch.bincount(torch.tensor([a for a, _ in draws]), minlength=V).float()
    assert chisquare(first.numpy(), (PROBS[0] * len(draws)).numpy()).pvalue < 1e-3


def test_top_k_and_top_p_processing():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    torch.testing.assert_close(target_probs(logits, 1.0), torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    torch.testing.assert_close(target_probs(logits, 1.0, top_k=2), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    torch.testing.assert_close(target_probs(logits, 1.0, top_p=0.7), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))


def test_tree_sampling_matches_plain_sampling_end_to_end():
    """First two generated tokens of a tiny model: tree sampling vs plain sampling, 2-sample chi-square."""
    target = tiny_model(3, vocab_size=8, init_range=0.4)
    drafter = DraftLMDrafter(perturbed_copy(target, 3, noise=0.3))
    policy = OptTreePolicy(OptTreeConfig(nodes=4, threshold=0.0, max_depth=3))
    prompt = random_prompt(3, length=4, vocab_size=8)
    counts = torch.zeros(2, 64)
    for seed in range(1500):
        config = DecodeConfig(max_new_tokens=2, temperature=1.0, seed=seed, stop_at_eos=False)
        tree = generate(target, drafter, policy, prompt, config).token_ids
        plain = generate_autoregressive(target, prompt, DecodeConfig(max_new_tokens=2, temperature=1.0,
                                                                     seed=10_000 + seed, stop_at_eos=False)).token_ids
        counts[0, tree[0] * 8 + tree[1]] += 1
        counts[1, plain[0] * 8 + plain[1]] += 1
    keep = counts.sum(0) > 0
    assert chi2_contingency(counts[:, keep].numpy()).pvalue > 1e-3


def test_sampling_is_reproducible_with_a_seed():
    target = tiny_model(4, vocab_size=16)
    drafter = DraftLMDrafter(perturbed_copy(target, 4, noise=0.1))
    policy = OptTreePolicy(OptTreeConfig(nodes=6, threshold=0.0, max_depth=3))
    config = DecodeConfig(max_new_tokens=20, temperature=0.8, top_p=0.9, seed=7, stop_at_eos=False)
    runs = [generate(target, drafter, policy, random_prompt(4, vocab_size=16), config).token_ids for _ in range(2)]
    assert runs[0] == runs[1]


@pytest.mark.parametrize("params,needle", [(dict(temperature=-1.0), "temperature"), (dict(top_p=0.0), "top_p"),
                                           (dict(top_k=-2), "top_k")])
def test_bad_sampling_settings_are_one_line_errors(params, needle):
    with pytest.raises(OptTreeError, match=needle):
        DecodeConfig(**params)
