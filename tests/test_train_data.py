"""Batched self-distillation: the compacting generator answers exactly what per-prompt greedy decoding does."""
from types import SimpleNamespace

import torch

from opttree_core.models import LoadedModel
from opttree_core.tools.train.data import Sequence, _generate_batch, _generate_batch_hf, compute_features
from conftest import hf_greedy, random_prompt, tiny_model


def _cut(tokens: list[int], eos: set[int]) -> list[int]:
    ends = [i for i, t in enumerate(tokens) if t in eos]
    return tokens[: ends[0] + 1] if ends else tokens


def test_batched_generation_equals_per_prompt_greedy_with_rows_ending_at_different_steps():
    model = tiny_model(11, layers=2)
    prompts = [random_prompt(100 + i, length=3 + 2 * i).tolist() for i in range(5)]  # lengths 3..11: left padding
    free = [hf_greedy(model, torch.tensor(p), 12) for p in prompts]  # these stop at the config's EOS, 2
    eos = free[0][3]  # a second EOS the target really emits: row 0 stops after 4 tokens, others when they meet it
    model.generation_config.eos_token_id = [2, eos]
    expected = [_cut(f, {2, eos}) for f in free]
    assert len({len(e) for e in expected}) > 1  # rows do finish at different steps
    target = LoadedModel(model, SimpleNamespace(pad_token_id=0, eos_token_id=eos), "tiny")
    assert _generate_batch(target, prompts, 12) == expected
    assert _generate_batch_hf(target, prompts, 12) == expected
    assert _generate_batch(target, prompts[:1], 1) == [expected[0][:1]]


def test_three_layer_features_are_the_last_layer_then_the_chosen_layer_inputs(tmp_path):
    model = tiny_model(12, layers=4)
    target = LoadedModel(model, None, "tiny")
    seqs = [Sequence(random_prompt(i, length=6 + i).tolist(), 3, "t") for i in range(3)]
    feats = compute_features(target, seqs, tmp_path / "f.pt", batch_size=2, progress=False, layers=(0, 2, 3))
    with torch.no_grad():
        out = model.get_decoder()(torch.tensor([seqs[2].ids]), output_hidden_states=True)
    want = torch.cat([out.last_hidden_state[0], *(out.hidden_states[i][0] for i in (0, 2, 3))], dim=-1)
    assert feats[2].shape == (len(seqs[2].ids), 4 * 64)
    torch.testing.assert_close(feats[2].float(), want, atol=2e-2, rtol=2e-2)  # fp16 cache
    again = compute_features(target, seqs, tmp_path / "f.pt", progress=False, layers=(0, 2, 3))  # from the cache
    assert all(torch.equal(a, b) for a, b in zip(feats, again))
