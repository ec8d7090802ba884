"""The few-row CPU kernel computes what nn.Linear computes, for every row count and shape."""
import pytest
import torch
from torch import nn

from opttree_core.models import load_model, tiny_llama_config
from opttree_core.skinny import (
    MAX_ROWS,
    SkinnyLinear,
    use_skinny_matmul,
    uses_skinny_matmul,
)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 3, MAX_ROWS, MAX_ROWS + 1, 40])
def test_skinny_linear_matches_linear(rows, bias):
    torch.manual_seed(rows)
    plain = nn.Linear(48, 80, bias=bias)
    skinny = nn.Linear(48, 80, bias=bias)
    skinny.load_state_dict(plain.state_dict())
    use_skinny_matmul(skinny)
    assert type(skinny) is SkinnyLinear
    for shape in [(rows, 48), (1, rows, 48)]:
        x = torch.randn(shape)
        out = skinny(x)
        assert out.shape == (*shape[:-1], 80)
        torch.testing.assert_close(out, plain(x), rtol=1e-5, atol=1e-5)


def test_skinny_linear_passes_gradients():
    layer = nn.Linear(8, 4)
    use_skinny_matmul(layer)
    layer(torch.randn(2, 8)).sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None


def test_load_model_switches_cpu_models_and_can_be_told_not_to():
    assert uses_skinny_matmul(load_model(tiny_llama_config()).model)
    model = load_model(tiny_llama_config(), skinny_matmul=False).model
    assert not uses_skinny_matmul(model)
    n_linear = sum(type(m) is nn.Linear for m in model.modules())
    assert use_skinny_matmul(model) == n_linear > 0
    assert use_skinny_matmul(model, on=False) == n_linear and not uses_skinny_matmul(model)


def test_state_dict_keys_do_not_change():
    plain = load_model(tiny_llama_config(), skinny_matmul=False).model
    skinny = load_model(tiny_llama_config()).model
    assert plain.state_dict().keys() == skinny.state_dict().keys()
