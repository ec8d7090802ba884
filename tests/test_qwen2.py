"""A second model family, as the Qwen2.5-Coder pair is built: tiny random Qwen2 models (q/k/v biases,
an untied LM head, grouped-query attention 6:1) drafted by a smaller Qwen2 of another width and depth.
Greedy tree decoding equals plain greedy, every node's logits equal sequential decoding of its path,
and tree sampling keeps the target's distribution."""
import copy
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, Qwen2Config

from conftest import first_two_tokens_pvalue, hf_greedy, random_prompt, tree_and_path_logits
from opttree_core import invariant
from opttree_core.decoding import DecodeConfig, generate
from opttree_core.drafters import DraftLMDrafter
from opttree_core.invariant import invariant_linear, use_invariant_kernels
from opttree_core.policies import make_policy
from opttree_core.skinny import use_skinny_matmul
from opttree_core.tree import DraftTree
from opttree_core.verify import prefill_target, score_root, tree_attention

VOCAB = 64


def tiny_qwen2(seed: int, hidden: int = 48, layers: int = 2, vocab_size: int = VOCAB, init_range: float = 0.3):
    """A tiny random Qwen2: 6 query heads sharing 1 KV head, q/k/v biases, its own LM head."""
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=6, num_key_value_heads=1,
                         max_position_embeddings=256, tie_word_embeddings=False, initializer_range=init_range,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config).eval()
        for name, param in model.named_parameters():
            if name.endswith("bias"):  # Qwen2 initialises biases to 0: make them matter
                torch.nn.init.normal_(param, std=0.2)
    use_skinny_matmul(model)
    return model


def test_the_tiny_qwen2_is_built_like_the_real_one():
    model = tiny_qwen2(0)
    attention = model.model.layers[0].self_attn
    assert attention.q_proj.bias is not None and attention.k_proj.bias is not None and attention.o_proj.bias is None
    assert model.config.num_attention_heads // model.config.num_key_value_heads == 6
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("policy,params", [("opt-tree", {"nodes": 8, "threshold": 0.0, "max_depth": 5}),
                                           ("eagle2", {"depth": 4, "top_k": 3, "total_tokens": 10}),
                                           ("chain", {"length": 4})])
def test_greedy_tree_decoding_equals_plain_greedy_with_a_smaller_qwen2_draft(seed, policy, params):
    target = tiny_qwen2(seed)
    draft = tiny_qwen2(seed + 100, hidden=24, layers=1)  # another size, the same vocabulary
    prompt = random_prompt(seed, length=4 + seed)
    result = generate(target, DraftLMDrafter(draft), make_policy(policy, **params), prompt,
                      DecodeConfig(max_new_tokens=32, stop_at_eos=False))
    assert result.token_ids == hf_greedy(target, prompt, 32)


def test_every_node_logit_equals_sequential_decoding_of_its_path():
    target = tiny_qwen2(7)
    tree = DraftTree.from_paths(20, [[5, 6, 7, 8], [5, 9], [10, 11, 12], [13]])
    logits, references = tree_and_path_logits(target, torch.cat([random_prompt(7, length=9), torch.tensor([20])]), tree)
    for node, reference in enumerate(references):
        torch.testing.assert_close(logits[node], reference, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_tree_sampling_keeps_the_qwen2_targets_distribution():
    target = tiny_qwen2(3, vocab_size=8, init_range=0.4)
    drafter = DraftLMDrafter(tiny_qwen2(4, hidden=24, layers=1, vocab_size=8, init_range=0.4))
    policy = make_policy("opt-tree", nodes=4, threshold=0.0, max_depth=3)
    prompt = random_prompt(3, length=4, vocab_size=8)
    assert first_two_tokens_pvalue(target, drafter, policy, prompt, runs=1500, children="top-k") > 1e-3


# --- bfloat16: the row-count-invariant kernels (opttree_core/invariant.py) ------------------------

def bf16_qwen2(seed: int, invariant: bool = True, **sizes):
    model = tiny_qwen2(seed, **sizes)
    use_skinny_matmul(model, on=False)
    model.to(torch.bfloat16)
    use_invariant_kernels(model, on=invariant)
    return model


def test_a_row_of_an_invariant_product_depends_on_that_row_alone():
    gen = torch.Generator().manual_seed(0)
    weight = (torch.randn(700, 384, generator=gen) * 0.05).bfloat16()
    x = torch.randn(40, 384, generator=gen).bfloat16()
    alone = torch.cat([invariant_linear(x[i : i + 1], weight) for i in range(40)])
    for rows in (2, 5, 16, 17, 40):
        assert torch.equal(invariant_linear(x[:rows], weight), alone[:rows]), rows
    assert torch.equal(invariant_linear(x.flip(0), weight), alone.flip(0))


def test_a_packed_weight_gives_the_stock_product_bit_for_bit():
    """``InvariantLinear`` multiplies through its weight packed once for oneDNN: the same numbers as
    ``F.linear``'s own product of the block, only without reordering the weight on every call."""
    gen = torch.Generator().manual_seed(1)
    weight = (torch.randn(700, 384, generator=gen) * 0.05).bfloat16()
    bias = (torch.randn(700, generator=gen) * 0.05).bfloat16()
    x = torch.randn(40, 384, generator=gen).bfloat16()
    packed = invariant.pack_weight(weight)  # None on a CPU whose oneDNN has no bfloat16 kernels
    for rows in (1, 5, 16, 17, 40):
        assert torch.equal(invariant_linear(x[:rows], weight, bias, packed), invariant_linear(x[:rows], weight, bias))
    model = bf16_qwen2(0, hidden=96)
    layer = model.model.layers[0].mlp.up_proj
    assert (layer._packed is None) == (packed is None)
    with torch.no_grad():
        layer.weight.mul_(2)  # a weight changed in place is packed again before its next product
    assert torch.equal(layer(x[:3, :96]), invariant_linear(x[:3, :96], layer.weight))
    twin = copy.deepcopy(model)  # the packed weight is left out of copies, which pack their own
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(twin(ids).logits, model(ids).logits)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_tree_rows_attending_together_get_what_each_gets_alone(dtype):
    """The invariant attention batches the rows that see as many keys (a tree's nodes at one depth). At
    the 1.5B target's shapes (12 query heads sharing 2 KV heads of 128, a 300-token prefix), each row
    gets bit for bit what it gets attending alone to its keys, as a sequential step does."""
    gen = torch.Generator().manual_seed(2)
    paths = [[1, 6, 11, 14], [1, 6, 12], [1, 7], [1, 8], [1, 9], [2, 10, 13, 15], [3], [4], [5]]
    tree = DraftTree.from_paths(0, paths)  # 16 nodes in 5 depths of 1, 5, 5, 3 and 2, as opt-tree-auto draws
    prefix, nodes = 300, tree.n_nodes
    allowed = tree_attention(tree, prefix)  # (16, 316)
    query = torch.randn(1, 12, nodes, 128, generator=gen).to(dtype)
    key, value = (torch.randn(1, 2, prefix + nodes, 128, generator=gen).to(dtype) for _ in range(2))
    together, _ = invariant.invariant_attention(None, query, key, value, allowed[None, None])
    for node in range(nodes):
        seen = allowed[node].nonzero().squeeze(1)
        alone, _ = invariant.invariant_attention(None, query[:, :, node : node + 1], key[:, :, seen], value[:, :, seen],
                                                 None)
        assert torch.equal(together[:, node], alone[:, 0]), node


def test_the_attention_groups_are_computed_anew_for_each_forward():
    """The rows grouped by key count are computed at a forward's first layer and reused by its later
    layers, which share its mask; the next forward groups its own mask, even one changed in place."""
    gen = torch.Generator().manual_seed(3)
    query = torch.randn(1, 6, 3, 16, generator=gen)
    key, value = (torch.randn(1, 1, 8, 16, generator=gen) for _ in range(2))
    mask = torch.ones(1, 1, 3, 8, dtype=torch.bool)
    mask[0, 0, 1:, 5] = False  # rows 1 and 2 skip key 5
    first, later = SimpleNamespace(layer_idx=0), SimpleNamespace(layer_idx=1)
    before, _ = invariant.invariant_attention(first, query, key, value, mask)
    assert torch.equal(invariant.invariant_attention(later, query, key, value, mask)[0], before)
    mask[0, 0, 1:, 5] = True
    again, _ = invariant.invariant_attention(first, query, key, value, mask)
    assert torch.equal(again, invariant.invariant_attention(None, query, key, value, mask.clone())[0])
    assert not torch.equal(again[:, 1:], before[:, 1:])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_with_invariant_kernels_every_node_logit_equals_sequential_decoding_bit_for_bit(dtype):
    target = tiny_qwen2(7, hidden=192)
    use_skinny_matmul(target, on=False)
    target.to(dtype)
    use_invariant_kernels(target)
    paths = [[5, 6, 7, 8], [5, 9], [10, 11, 12], [13], [14, 15], [16, 17, 18, 19], [21], [22, 23]]
    tree = DraftTree.from_paths(20, paths)  # 19 nodes: two blocks of 16 rows
    prompt = torch.cat([random_prompt(7, length=30), torch.tensor([20])])
    logits, references = tree_and_path_logits(target, prompt, tree, sequential=True)
    for node, reference in enumerate(references):
        assert torch.equal(logits[node], reference)


def test_a_tree_larger_than_max_rows_is_verified_in_blocks_too(monkeypatch):
    """Past ``MAX_ROWS`` rows only a verification keeps the blocks: with the cap lowered to 8 a 19-node
    tree is still bit-equal to sequential decoding, while the 30-token prompt is prefilled as it is."""
    monkeypatch.setattr(invariant, "MAX_ROWS", 8)
    target = bf16_qwen2(7, hidden=384)
    paths = [[5, 6, 7, 8], [5, 9], [10, 11, 12], [13], [14, 15], [16, 17, 18, 19], [21], [22, 23]]
    tree = DraftTree.from_paths(20, paths)
    prompt = torch.cat([random_prompt(7, length=30), torch.tensor([20])])
    logits, references = tree_and_path_logits(target, prompt, tree, sequential=True)
    for node, reference in enumerate(references):
        assert torch.equal(logits[node], reference), node
    rows = torch.randn(12, 384).bfloat16()
    weight = target.model.layers[0].mlp.up_proj.weight
    assert torch.equal(invariant.invariant_linear(rows, weight), F.linear(rows, weight))  # outside: stock
    with invariant.verification():
        assert torch.equal(invariant.invariant_linear(rows, weight)[:1], invariant.invariant_linear(rows[:1], weight))


def test_a_prompt_is_prefilled_by_stock_products_as_model_generate_prefills_it():
    """A forward over an empty cache (a prefill) takes the stock kernels at any length: no row of it is
    compared with a row of another forward, and a stock product of 30 rows costs far less than two of
    16. The engine prefills the whole prompt in one forward, as ``model.generate`` does, so AR's logits
    equal ``generate``'s at every step bit for bit, and tree decoding its tokens."""
    target = bf16_qwen2(7, hidden=768)
    prompt = random_prompt(7, length=30)
    stock = copy.deepcopy(target)
    use_invariant_kernels(stock, on=False)
    state, _ = prefill_target(target, prompt)
    stock_state, _ = prefill_target(stock, prompt)
    for layer, stock_layer in zip(state.cache.layers, stock_state.cache.layers):
        assert torch.equal(layer.keys, stock_layer.keys) and torch.equal(layer.values, stock_layer.values)
    out = target.generate(prompt[None], attention_mask=torch.ones(1, 30, dtype=torch.long), max_new_tokens=6,
                          do_sample=False, pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    for step, token in enumerate(out.sequences[0, 30:].tolist()):
        assert torch.equal(score_root(state).logits[0], out.logits[step][0].float()), step
        state.advance([token])
    draft = tiny_qwen2(107, hidden=24, layers=1)
    policy = make_policy("opt-tree", nodes=12, threshold=0.0, max_depth=5)
    result = generate(target, DraftLMDrafter(draft), policy, prompt, DecodeConfig(max_new_tokens=20))
    assert result.token_ids == hf_greedy(target, prompt, 20)


def test_the_prefill_hooks_come_and_go_with_the_kernels():
    """One pair of hooks on the decoder however often the kernels are given, none once taken back, and
    a forward that fails inside a prefill leaves the next forward's rows in blocks."""
    model = bf16_qwen2(0, hidden=96)
    use_invariant_kernels(model)
    decoder = model.get_decoder()
    assert list(decoder._forward_pre_hooks.values()).count(invariant._note_prefill) == 1
    assert list(decoder._forward_hooks.values()).count(invariant._end_prefill) == 1
    with pytest.raises(IndexError):
        model(torch.tensor([[1, 2, 10_000]]))  # a token past the vocabulary fails inside the prefill
    assert invariant._in_blocks(3) and not invariant._in_blocks(invariant.MAX_ROWS + 1)
    use_invariant_kernels(model, on=False)
    assert invariant._note_prefill not in decoder._forward_pre_hooks.values()
    assert invariant._end_prefill not in decoder._forward_hooks.values()


def test_stock_bf16_kernels_do_differ_with_the_row_count():
    """Why the invariant kernels exist: without them the same check fails in bfloat16."""
    target = bf16_qwen2(7, invariant=False, hidden=768)
    tree = DraftTree.from_paths(20, [[5, 6, 7, 8], [5, 9], [10, 11, 12], [13], [14, 15], [16, 17, 18, 19], [21],
                                     [22, 23], [24, 25, 26], [27]])  # 22 nodes below the root: one stock product
    logits, references = tree_and_path_logits(target, torch.cat([random_prompt(7, length=30), torch.tensor([20])]),
                                              tree, sequential=True)
    assert any(not torch.equal(logits[node], reference) for node, reference in enumerate(references))


@pytest.mark.parametrize("seed", range(3))
def test_bf16_greedy_tree_decoding_equals_model_generate(seed):
    target = bf16_qwen2(seed, hidden=96)
    draft = tiny_qwen2(seed + 100, hidden=24, layers=1)  # float32, stock kernels: a draft needs no exactness
    prompt = random_prompt(seed, length=5 + seed)
    policy = make_policy("opt-tree", nodes=12, threshold=0.0, max_depth=5)
    result = generate(target, DraftLMDrafter(draft), policy, prompt, DecodeConfig(max_new_tokens=40))
    assert result.token_ids == hf_greedy(target, prompt, 40)  # both stop at EOS
