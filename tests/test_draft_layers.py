"""A draft model cut to its first K decoder layers ("qwen2.5-coder-0.5b:int4:layers12"): a weaker,
cheaper draft of graded strength (issue 28's open question on draft strength). Its logits are the
full model's hidden state after layer K through the final norm and LM head, tree decoding with it
stays exactly plain greedy, and a K out of range is one line."""
import pytest
import torch

from conftest import hf_greedy, random_prompt
from opttree_core.decoding import DecodeConfig, generate
from opttree_core.drafters import DraftLMDrafter
from opttree_core.drafters.registry import keep_first_layers, layers_suffix, load_drafter
from opttree_core.errors import OptTreeError
from opttree_core.models import load_model
from opttree_core.policies import make_policy
from test_qwen2 import tiny_qwen2


def test_a_draft_models_spec_names_its_layers_before_its_vocabulary():
    assert layers_suffix("qwen2.5-coder-0.5b:int4:layers12") == ("qwen2.5-coder-0.5b:int4", 12)
    assert layers_suffix("qwen2.5-coder-0.5b:layers3") == ("qwen2.5-coder-0.5b", 3)
    assert layers_suffix("qwen2.5-coder-0.5b:int4") == ("qwen2.5-coder-0.5b:int4", None)
    assert layers_suffix("dir:layersome") == ("dir:layersome", None)


@torch.inference_mode()
def test_a_cut_models_logits_are_the_full_models_state_after_layer_k_through_norm_and_head():
    full, cut = tiny_qwen2(3, layers=3), tiny_qwen2(3, layers=3)
    keep_first_layers(cut, 2, "tiny")
    assert len(cut.model.layers) == 2 and cut.config.num_hidden_layers == 2
    tokens = random_prompt(3, length=7).unsqueeze(0)
    states = full(tokens, output_hidden_states=True).hidden_states  # embeddings, then after each layer (last: normed)
    expected = full.lm_head(full.model.norm(states[2]))
    torch.testing.assert_close(cut(tokens).logits, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(cut(tokens).logits, full(tokens).logits, atol=1e-3)  # the third layer mattered


@pytest.mark.parametrize("seed", range(2))
def test_greedy_tree_decoding_with_a_cut_draft_equals_plain_greedy(seed):
    target, draft = tiny_qwen2(seed), tiny_qwen2(seed + 100, hidden=24, layers=3)
    keep_first_layers(draft, 1, "tiny")
    prompt = random_prompt(seed, length=5)
    result = generate(target, DraftLMDrafter(draft), make_policy("opt-tree", nodes=8, threshold=0.0, max_depth=5),
                      prompt, DecodeConfig(max_new_tokens=24, stop_at_eos=False))
    assert result.token_ids == hf_greedy(target, prompt, 24)


def test_the_spec_loads_a_cut_draft_and_a_k_out_of_range_is_one_line():
    target = load_model("tiny-random")
    layers = target.model.config.num_hidden_layers
    drafter = load_drafter(f"tiny-random:layers{layers - 1}", target)
    assert len(drafter.model.get_decoder().layers) == layers - 1
    assert len(target.model.get_decoder().layers) == layers  # the target itself is never cut
    for k in (0, layers + 1):
        with pytest.raises(OptTreeError, match=rf"has {layers} decoder layers, so ':layersK' takes K in 1..{layers}"):
            load_drafter(f"tiny-random:layers{k}", target)
