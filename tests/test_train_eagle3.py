"""The EAGLE-3 recipe: its training-time test, drafting losslessly, and heads that export and load back."""
from types import SimpleNamespace

import pytest
import torch
from scipy.stats import chisquare

from opttree_core.decoding import DecodeConfig, generate
from opttree_core.eagle_checkpoints import load_eagle_checkpoint
from opttree_core.eagle_export import export_head
from opttree_core.errors import OptTreeError
from opttree_core.models import LoadedModel
from opttree_core.policies import ChainConfig, ChainPolicy, OptTreeConfig, OptTreePolicy
from opttree_core.tools.export_head import compare_drafts
from opttree_core.tools.train.data import Sequence, _generate_batch
from opttree_core.tools.train.eagle3 import Eagle3Recipe, unroll_mask
from opttree_core.tools.train.loop import TrainConfig, make_batch, train
from opttree_core.tree import TreeLayer
from opttree_core.verify import prefill_target
from conftest import hf_greedy, random_prompt, tiny_model

LAYERS = (0, 1, 2)


def features(target, ids: list[int], layers=LAYERS) -> torch.Tensor:
    """f_j then the inputs of ``layers`` (what ``compute_features(layers=...)`` caches), (len, 4 · hidden)."""
    with torch.no_grad():
        out = target.get_decoder()(torch.tensor([ids]), output_hidden_states=True)
    return torch.cat([out.last_hidden_state[0], *(out.hidden_states[i][0] for i in layers)], dim=-1)


def distill(target, n: int, length: int, first_seed: int):
    """The target's greedy answers to n random prompts (the batched generator, equal to per-prompt greedy:
    tests/test_train_data.py) and their features."""
    prompts = [random_prompt(first_seed + i, length=6).tolist() for i in range(n)]
    answers = _generate_batch(LoadedModel(target, SimpleNamespace(pad_token_id=0), "t"), prompts, length)
    sequences = [Sequence(p + a, 6, "t") for p, a in zip(prompts, answers)]
    return sequences, [features(target, s.ids) for s in sequences]


@pytest.fixture(scope="module")
def bigram():
    """A random 3-layer target with its attention outputs off: the next token is a function of the current one,
    so what 48 sequences teach carries over to held-out prompts."""
    target = tiny_model(5, layers=3, init_range=0.5)
    for layer in target.model.layers:
        layer.self_attn.o_proj.weight.data.zero_()
    target.requires_grad_(False)
    return target, distill(target, 48, 24, 1000), distill(target, 6, 24, 2000)[0]


def depth_acceptance(target, drafter, held: list[Sequence], depth: int = 3) -> list[float]:
    """Share of decoding steps (a chain of ``depth`` drafts) that accept at least 1, 2, … ``depth`` drafted tokens."""
    hits, steps = [0] * depth, 0
    for seq in held:
        result = generate(target, drafter, ChainPolicy(ChainConfig(depth)), torch.tensor(seq.ids[: seq.n_prompt]),
                          DecodeConfig(max_new_tokens=30, stop_at_eos=False))
        steps += len(result.accept_lengths)
        for d in range(depth):
            hits[d] += sum(a >= d + 2 for a in result.accept_lengths)
    return [h / steps for h in hits]


def test_the_unroll_makes_depth_two_and_three_drafts_at_equal_steps(bigram):
    """Token loss only, the head never sees its own outputs without the training-time test: beyond depth 1 it then
    drafts nothing. With 4 unrolled steps it drafts depths 2 and 3 (same data, steps, seed)."""
    target, (seqs, feats), held = bigram
    config = TrainConfig(epochs=6, lr=1e-2, batch_size=4, warmup_steps=5, seed=0)
    rates = {}
    for steps in (1, 4):
        torch.manual_seed(0)
        recipe = Eagle3Recipe(target, feature_layers=LAYERS, ttt_steps=steps)
        history = train(recipe, seqs, feats, config, progress=False)
        assert len(history) == 72
        rates[steps] = depth_acceptance(target, recipe.drafter(target), held)
    assert rates[4][1] > rates[1][1] + 0.4 and rates[4][2] > rates[1][2] + 0.4
    assert rates[4][0] > 0.6  # depth 1 is still learned
    states = []
    for _ in range(2):  # seeded: deterministic
        torch.manual_seed(0)
        again = Eagle3Recipe(target, feature_layers=LAYERS, ttt_steps=4)
        train(again, seqs, feats, TrainConfig(**{**config.__dict__, "max_steps": 8}), progress=False)
        states.append(again.own_state())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_unrolled_training_sees_exactly_what_the_drafter_computes_at_depths_one_to_three(bigram):
    target, (seqs, feats), _ = bigram
    torch.manual_seed(1)
    recipe = Eagle3Recipe(target, feature_layers=LAYERS, ttt_steps=3)
    recipe.model.eval()
    ids, j = seqs[0].ids, 9
    with torch.no_grad():
        steps = [recipe.student_logits(hidden[0, j])
                 for _, hidden, _, _ in recipe._unroll(make_batch(seqs, feats, [0], 512, "cpu"), 3)]
    drafter = recipe.drafter(target)
    _, prefix = prefill_target(target, torch.tensor(ids[: j + 2]), LAYERS)
    drafter.start(torch.tensor(ids[: j + 2]), prefix)
    drafted = [drafter.root_probs()]
    for depth in (1, 2):  # a chain of the true tokens x_{j+2}, x_{j+3} below the root
        token = torch.tensor([ids[j + 1 + depth]])
        layer = TreeLayer(tokens=token, parent_slots=torch.tensor([depth - 2]), depth=depth,
                          ancestors=torch.ones(1, depth - 1, dtype=torch.bool),
                          paths=torch.tensor([ids[j + 2: j + 2 + depth]]))
        drafted.append(drafter.expand(layer)[0])
    for logits, q in zip(steps, drafted):
        torch.testing.assert_close(torch.softmax(logits.float(), -1), q, atol=1e-5, rtol=0)


def test_unroll_mask_is_causal_then_each_rows_own_chain():
    allowed = unroll_mask(3, 2, torch.float32, "cpu")[0, 0] == 0  # (3, 9)
    assert allowed[:, :3].tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    assert allowed[:, 3:6].tolist() == allowed[:, 6:].tolist() == torch.eye(3, dtype=torch.bool).tolist()


def small_target(vocab: int = 64, seed: int = 3, layers: int = 3):
    target = tiny_model(seed, vocab_size=vocab, layers=layers, init_range=0.4)
    target.requires_grad_(False)
    return target


@pytest.mark.parametrize("seed", range(3))
def test_greedy_decoding_with_the_head_equals_plain_greedy(seed):
    target = small_target(seed=seed)
    torch.manual_seed(seed)
    recipe = Eagle3Recipe(target, draft_ids=torch.arange(10, 50), feature_layers=LAYERS, ttt_steps=2)
    seqs, feats = distill(target, 4, 12, 300 + 10 * seed)
    train(recipe, seqs, feats, TrainConfig(epochs=1, lr=1e-2, batch_size=2, warmup_steps=1), progress=False)
    prompt = random_prompt(seed)
    policy = OptTreePolicy(OptTreeConfig(nodes=10, threshold=0.0, max_depth=4))
    out = generate(target, recipe.drafter(target), policy, prompt, DecodeConfig(max_new_tokens=30))
    assert out.token_ids == hf_greedy(target, prompt, 30)


def two_token_probs(target, prompt: torch.Tensor, vocab: int) -> torch.Tensor:
    """The target's exact distribution of its first two sampled tokens, (vocab · vocab,): p(a) · p(b | a)."""
    with torch.no_grad():
        first = torch.softmax(target(prompt[None]).logits[0, -1].float(), -1)  # (V,)
        both = torch.cat([prompt.repeat(vocab, 1), torch.arange(vocab)[:, None]], dim=1)  # (V, len + 1): prompt, a
        second = torch.softmax(target(both).logits[:, -1].float(), -1)  # (V, V): p(b | a)
    return (first[:, None] * second).flatten()


def test_tree_sampling_with_the_head_keeps_the_targets_distribution():
    """First two tokens of tree sampling (sampled children, a draft vocabulary without tokens 1, 4, 7) against the
    target's exact two-token distribution: chi-square goodness of fit, cells expected below 5 pooled."""
    target = small_target(vocab=8)
    torch.manual_seed(3)
    recipe = Eagle3Recipe(target, draft_ids=torch.tensor([0, 2, 3, 5, 6]), feature_layers=LAYERS)
    drafter = recipe.drafter(target)
    policy = OptTreePolicy(OptTreeConfig(nodes=4, threshold=0.0, max_depth=3))
    prompt = random_prompt(3, length=4, vocab_size=8)
    n, counts = 500, torch.zeros(64)
    for seed in range(n):
        config = DecodeConfig(max_new_tokens=2, temperature=1.0, seed=seed, stop_at_eos=False, children="sampled")
        tree = generate(target, drafter, policy, prompt, config).token_ids
        counts[tree[0] * 8 + tree[1]] += 1
    expected = two_token_probs(target, prompt, 8).double() * n
    small = expected < 5
    observed = torch.cat([counts[~small].double(), counts[small].sum()[None].double()])
    expected = torch.cat([expected[~small], expected[small].sum()[None]])
    assert chisquare(observed.numpy(), expected.numpy() * observed.sum().item() / expected.sum().item()).pvalue > 1e-3


@pytest.mark.parametrize("draft_ids", [None, torch.arange(5, 45)], ids=["full-vocab", "draft-vocab"])
def test_the_exported_checkpoint_loads_through_the_eagle3_loader_and_drafts_identically(tmp_path, draft_ids):
    target = small_target()
    loaded = LoadedModel(target, None, "tiny")
    torch.manual_seed(0)
    recipe = Eagle3Recipe(target, draft_ids=draft_ids, feature_layers=LAYERS, ttt_steps=2)
    seqs, feats = distill(target, 4, 12, 400)
    train(recipe, seqs, feats, TrainConfig(epochs=1, lr=1e-2, batch_size=2, warmup_steps=1), progress=False)
    drafter = recipe.drafter(target)
    out = export_head(drafter, loaded, tmp_path / "head", dtype="float32")
    reloaded = load_eagle_checkpoint(out, loaded)
    assert reloaded.feature_layers == LAYERS and reloaded.vocab_size == 64
    check = compare_drafts(loaded, drafter, reloaded, random_prompt(5))
    assert check["same_trees"] and check["steps"] > 3 and check["max_q_gap"] < 1e-5


def test_bad_recipe_settings_are_one_line_errors():
    with pytest.raises(OptTreeError, match="default 2, L//2, L-3 gives \\[2, 1, -1\\]"):
        Eagle3Recipe(small_target(layers=2))
    target = small_target()
    with pytest.raises(OptTreeError, match="distinct target layers"):
        Eagle3Recipe(target, feature_layers=(0, 0, 1))
    with pytest.raises(OptTreeError, match="ttt-steps"):
        Eagle3Recipe(target, feature_layers=LAYERS, ttt_steps=0)


def test_a_batch_with_nothing_to_learn_is_a_step_of_zero_loss_not_a_crash():
    target = small_target()
    recipe = Eagle3Recipe(target, feature_layers=LAYERS, ttt_steps=3)
    seqs = [Sequence([5, 6, 7, 8], 4, "t")]  # a prompt with no answer: no response position
    batch = make_batch(seqs, [features(target, seqs[0].ids)], [0], 512, "cpu")
    loss, metrics = recipe.loss(batch, None)
    assert loss.item() == 0.0 and metrics["rows"] == 0
    loss.backward()  # still a graph the loop can step on
