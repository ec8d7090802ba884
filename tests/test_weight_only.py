"""Int8 and int4 weight-only draft models (``weight_only.py``): close to the bf16/fp32 draft, and —
since verification decides every token — tree decoding with a quantized draft still gives exactly
plain greedy."""
import copy

import pytest
import torch

from conftest import hf_greedy, random_prompt
from opttree_core.decoding import DecodeConfig, generate
from opttree_core.drafters import DraftLMDrafter
from opttree_core.drafters.registry import load_drafter, weight_suffix
from opttree_core.errors import OptTreeError
from opttree_core.models import load_model
from opttree_core.policies import make_policy
from opttree_core.weight_only import (GROUP, INT4_MAX_ROWS, MAX_ROWS, PACKED_MAX_ROWS, Int4Linear, Int8Linear,
                                     int4_groups, int8_rows, quantize_linears, weight_format)
from test_qwen2 import tiny_qwen2


def test_int8_rows_round_each_row_to_its_own_scale():
    weight = torch.randn(40, 24) * torch.linspace(0.01, 5, 40)[:, None]  # rows of very different sizes
    q, scale = int8_rows(weight)
    assert q.dtype == torch.int8 and q.abs().max() == 127
    assert torch.all((q.float() * scale[:, None] - weight).abs() <= scale[:, None] / 2 + 1e-6)


def test_int4_groups_round_each_group_of_inputs_to_its_own_scale_and_minimum():
    weight = torch.randn(16, 3 * GROUP) * torch.linspace(0.01, 5, 3 * GROUP)  # groups of very different sizes
    codes, scale, low = int4_groups(weight)
    assert codes.dtype == torch.int32 and codes.min() == 0 and codes.max() == 15 and scale.shape == (16, 3)
    expanded = lambda t: t.repeat_interleave(GROUP, dim=1)  # noqa: E731 - one value per input
    assert torch.all((codes * expanded(scale) + expanded(low) - weight).abs() <= expanded(scale) / 2 + 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_int4_linear_is_the_dequantized_product_for_few_rows_and_the_original_for_more(dtype):
    linear = torch.nn.Linear(2 * GROUP, 48, bias=True).to(dtype)
    int4 = Int4Linear(linear)
    codes, scale, low = int4_groups(linear.weight)
    dequantized = codes * scale.repeat_interleave(GROUP, 1) + low.repeat_interleave(GROUP, 1)
    few = torch.randn(2, INT4_MAX_ROWS // 2, 2 * GROUP, dtype=dtype)
    expected = few.float() @ dequantized.T + linear.bias.float()
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    assert int4(few).shape == (2, INT4_MAX_ROWS // 2, 48) and int4(few).dtype == dtype
    torch.testing.assert_close(int4(few).float(), expected, atol=tol, rtol=tol)
    assert not torch.equal(int4(few), linear(few))
    many = torch.randn(INT4_MAX_ROWS + 1, 2 * GROUP, dtype=dtype)
    assert torch.equal(int4(many), linear(many))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rows_past_the_kernel_take_the_original_weight_packed_and_copies_pack_their_own(dtype):
    """Past the quantized kernel's rows the original weight's product, packed for oneDNN up to
    ``PACKED_MAX_ROWS`` rows (the same numbers as ``F.linear``'s, with the weight reordered once)."""
    linear = torch.nn.Linear(2 * GROUP, 48, bias=True).to(dtype)
    int4 = Int4Linear(linear)
    for rows in (INT4_MAX_ROWS + 1, 40, PACKED_MAX_ROWS + 1):
        x = torch.randn(rows, 2 * GROUP, dtype=dtype)
        assert torch.equal(int4(x), linear(x)), rows
    twin = copy.deepcopy(int4)
    assert "_packed" not in twin.__dict__
    x = torch.randn(40, 2 * GROUP, dtype=dtype)
    assert torch.equal(twin(x), int4(x))


def test_a_layer_the_int4_kernel_cannot_pack_stays_int8():
    model = tiny_qwen2(3, hidden=96)  # q/k/v/o and the MLP pack; the 64-token LM head does too
    model.lm_head = torch.nn.Linear(96, 40, bias=False)  # 40 outputs: not a multiple of 16
    quantize_linears(model, "int4")
    assert isinstance(model.model.layers[0].mlp.down_proj, Int4Linear) and isinstance(model.lm_head, Int8Linear)
    assert weight_format(model) == "int4"
    with pytest.raises(OptTreeError, match="int4 layer needs outputs in multiples of 16"):
        Int4Linear(torch.nn.Linear(96, 40))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_an_int8_linear_is_the_dequantized_product_for_few_rows_and_the_original_for_more(dtype):
    linear = torch.nn.Linear(32, 48, bias=True).to(dtype)
    int8 = Int8Linear(linear)
    q, scale = int8_rows(linear.weight)
    few = torch.randn(2, MAX_ROWS // 2, 32, dtype=dtype)
    expected = few.float() @ (q.float() * scale[:, None]).T + linear.bias.float()
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    assert int8(few).shape == (2, MAX_ROWS // 2, 48) and int8(few).dtype == dtype
    assert torch.allclose(int8(few).float(), expected, atol=tol, rtol=tol)
    assert not torch.equal(int8(few), linear(few))
    many = torch.randn(MAX_ROWS + 1, 32, dtype=dtype)
    assert torch.equal(int8(many), linear(many))


def test_a_quantized_draft_keeps_close_to_its_own_distribution():
    model = tiny_qwen2(3)
    ids = random_prompt(3, length=MAX_ROWS)[None]  # few rows: the int8 product
    before = torch.softmax(model(ids).logits.float(), -1)
    assert quantize_linears(model) == 2 * 7 + 1 and weight_format(model) == "int8"
    after = torch.softmax(model(ids).logits.float(), -1)
    assert not torch.equal(after, before)
    assert (after - before).abs().sum(-1).max() < 0.05  # total variation per position


@pytest.mark.parametrize("seed, weights", [(0, "int8"), (1, "int8"), (2, "int8"), (0, "int4"), (1, "int4")])
def test_greedy_tree_decoding_with_a_quantized_draft_equals_plain_greedy(seed, weights):
    target = tiny_qwen2(seed)
    draft = tiny_qwen2(seed + 100, hidden=24 if weights == "int8" else 96, layers=1)
    quantize_linears(draft, weights)
    assert weight_format(draft) == weights
    prompt = random_prompt(seed, length=5)
    result = generate(target, DraftLMDrafter(draft), make_policy("opt-tree", nodes=8, threshold=0.0, max_depth=5),
                      prompt, DecodeConfig(max_new_tokens=24, stop_at_eos=False))
    assert result.token_ids == hf_greedy(target, prompt, 24)


def test_a_draft_spec_takes_an_int8_or_int4_suffix():
    assert weight_suffix("qwen2.5-coder-0.5b:int8") == ("qwen2.5-coder-0.5b", "int8")
    assert weight_suffix("qwen2.5-coder-0.5b:int4") == ("qwen2.5-coder-0.5b", "int4")
    assert weight_suffix("some/dir:int3") == ("some/dir:int3", None)
    target = load_model("tiny-random")
    drafter = load_drafter("tiny-random:int8", target)
    assert drafter.name == "tiny-random:int8" and weight_format(drafter.model) == "int8"
    assert weight_format(load_drafter("tiny-random", target).model) is None
    with pytest.raises(OptTreeError, match="unknown draft 'tiny-random:int3'"):
        load_drafter("tiny-random:int3", target)


def test_int8_weights_are_refused_where_they_do_not_belong():
    with pytest.raises(OptTreeError, match="unknown weight format 'int3'"):
        load_model("tiny-random", weights="int3")
    with pytest.raises(OptTreeError, match="for a CPU draft model, without the invariant kernels"):
        load_model("tiny-random", weights="int8", invariant=True)
