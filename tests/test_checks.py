"""One validator set (``opttree_core/checks.py``) for DecodeConfig, every policy config and the n-gram
config: ``True`` is never taken for 1 where an integer is meant, nor for 1.0 where a real is."""
import dataclasses
import types
import typing

import pytest

from opttree_core.checks import check_int, check_prob, check_real
from opttree_core.decoding import DecodeConfig
from opttree_core.drafters import NGramConfig
from opttree_core.errors import OptTreeError
from opttree_core.policies import ChainConfig, OptTreeConfig
from opttree_core.policies.registry import POLICIES, budget_params, param_types


@pytest.mark.parametrize("make,needle", [
    (lambda: OptTreeConfig(nodes=True), "node budget n must be an integer >= 1, got True"),
    (lambda: ChainConfig(length=True), "chain length must be an integer >= 1, got True"),
    (lambda: DecodeConfig(max_new_tokens=True), "max_new_tokens must be an integer >= 1, got True"),
    (lambda: DecodeConfig(temperature=True), "temperature must be a finite number >= 0, got True"),
    (lambda: OptTreeConfig(threshold=True), "threshold delta must be a number in [0, 1], got True"),
])
def test_bool_is_refused_in_one_line(make, needle):
    with pytest.raises(OptTreeError) as error:
        make()
    assert str(error.value) == needle


def _int_fields(name: str) -> list[str]:
    """The policy config's fields typed int (or int | None)."""
    return [key for key, kind in param_types(name).items()
            if kind is int or (typing.get_origin(kind) in (typing.Union, types.UnionType)
                               and int in typing.get_args(kind))]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_registered_config_refuses_bool_for_its_integers(name):
    config_class = POLICIES[name][1]
    base = budget_params(name, 8)
    fields = _int_fields(name)
    assert fields, f"{name} has no integer field"
    for field in fields:
        with pytest.raises(OptTreeError, match=f"got True"):
            config_class(**{**base, field: True})


def test_the_ngram_config_refuses_bool():
    field = next(f.name for f in dataclasses.fields(NGramConfig) if f.type in (int, "int"))
    with pytest.raises(OptTreeError, match="got True"):
        NGramConfig(**{field: True})


def test_the_validators_name_the_setting_the_bound_and_the_value():
    with pytest.raises(OptTreeError, match=r"^top_k must be an integer >= 0, got -1$"):
        check_int(-1, "top_k", 0)
    with pytest.raises(OptTreeError, match=r"^top_p must be a number in \(0, 1\], got 0$"):
        check_real(0, "top_p", 0, 1, open_low=True)
    with pytest.raises(OptTreeError, match=r"^tau must be a number in \[0, 1\], got nan$"):
        check_prob(float("nan"), "tau")
    check_int(3, "n"), check_real(0.5, "x", 0, 1), check_prob(1, "p")  # valid values pass
