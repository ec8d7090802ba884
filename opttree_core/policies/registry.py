"""Every tree policy by name, and the one way to make one (the CLI, the bench harness and
the widgets all go through ``make_policy`` / ``policy_for_budget``).

Each config class has ``for_budget(nodes)``: the policy's natural configuration drafting at
most ``nodes`` nodes per step, so a benchmark grid over node budgets means the same for all.
"""
from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import fields

from ..errors import OptTreeError
from .auto import OptTreeAutoPolicy
from .base import TreePolicy
from .chain import ChainPolicy
from .cum_logprob import CumLogProbPolicy
from .dynatree import DynaTreePolicy
from .eagle2 import Eagle2Policy
from .kary import BinaryTreePolicy, KAryPolicy
from .opt_tree import OptTreePolicy
from .rank_paths import EagleStaticPolicy
from .sequoia import SequoiaPolicy

# One line a policy: its class names it, its config and its rule. name → (policy class, config class).
POLICIES = {policy.name: (policy, policy.config_class) for policy in (
    OptTreePolicy,
    ChainPolicy,
    SequoiaPolicy,
    OptTreeAutoPolicy,
    KAryPolicy,
    BinaryTreePolicy,
    EagleStaticPolicy,
    Eagle2Policy,
    DynaTreePolicy,
    CumLogProbPolicy,
)}


def _spec(name: str):
    if name not in POLICIES:
        raise OptTreeError(f"unknown policy {name!r}: choose one of {', '.join(sorted(POLICIES))}")
    return POLICIES[name]


def policy_params(name: str) -> list[str]:
    """The names of a policy's parameters (its config's fields)."""
    return [f.name for f in fields(_spec(name)[1])]


def param_types(name: str) -> dict[str, object]:
    """Each parameter's type, from the policy config's annotations (e.g. ``int``, ``float | None``)."""
    hints = typing.get_type_hints(_spec(name)[1])
    return {key: hints[key] for key in policy_params(name)}


def budget_params(name: str, budget: int) -> dict:
    """The policy's parameters at node budget ``budget`` (its config's ``for_budget``)."""
    base = _spec(name)[1].for_budget(budget)
    return {key: getattr(base, key) for key in policy_params(name)}


def budget_keys(name: str) -> tuple[str, ...]:
    """The parameters of policy ``name`` that the node budget sets (those its ``for_budget`` changes with n)."""
    small, large = budget_params(name, 4), budget_params(name, 64)
    return tuple(key for key in small if small[key] != large[key])


def parse_param(name: str, key: str, text: str):
    """``text`` typed as the parameter ``key`` of policy ``name`` (int, float, bool, str, a JSON list
    for tuples, "none" where the field may be None); a bad value is a one-line OptTreeError."""
    kinds = param_types(name)
    if key not in kinds:
        raise OptTreeError(f"policy {name!r} has no parameter {key!r}: it takes {', '.join(kinds)}")
    kind = kinds[key]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None
        if type(None) in typing.get_args(kind) and text.strip().lower() in ("none", ""):
            return None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    try:
        if kind is bool:
            return {"true": True, "1": True, "false": False, "0": False}[text.strip().lower()]
        if kind in (int, float, str):
            return kind(text)
        value = json.loads(text)
        return tuple(value) if typing.get_origin(kind) is tuple else value
    except (ValueError, KeyError, TypeError) as err:
        raise OptTreeError(f"{key}={text}: not a valid {getattr(kind, '__name__', kind)}") from err


def _fits(kind, value) -> bool:
    """Whether a TOML/JSON value has the parameter type ``kind`` (an int passes for a float)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return any(_fits(k, value) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0] if typing.get_args(kind) else object
        return isinstance(value, (list, tuple)) and all(_fits(item, v) for v in value)
    if kind is object:
        return True
    if isinstance(value, bool) or kind is bool:
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def typed_params(name: str, params) -> dict:
    """Parameters given as data (a bench config's ``[policy_params.NAME]`` table) checked against
    the policy config's field types, lists made tuples; a wrong key or type is a one-line error."""
    if not isinstance(params, dict):
        raise OptTreeError(f"parameters of policy {name!r} must be a table of KEY = VALUE, got {params!r}")
    kinds, typed = param_types(name), {}
    for key, value in params.items():
        if key not in kinds:
            raise OptTreeError(f"policy {name!r} has no parameter {key!r}: it takes {', '.join(kinds)}")
        if not _fits(kinds[key], value):
            kind = getattr(kinds[key], "__name__", None) or str(kinds[key])
            raise OptTreeError(f"policy {name!r} parameter {key} = {value!r}: not a valid {kind}")
        typed[key] = tuple(value) if isinstance(value, list) else value
    return typed


def make_policy(name: str, **params) -> TreePolicy:
    """A policy by name with its config's fields as keyword arguments."""
    policy_cls, config_cls = _spec(name)
    unknown = sorted(set(params) - set(policy_params(name)))
    if unknown:
        raise OptTreeError(f"policy {name!r} has no parameter {unknown[0]!r}: it takes {', '.join(policy_params(name))}")
    return policy_cls(config_cls(**params))


def policy_for_budget(name: str, budget: int, **overrides) -> TreePolicy:
    """A policy at node budget ``budget`` (its config's ``for_budget``), with fields overridden
    (``nodes`` among them, for a policy that has such a field)."""
    return make_policy(name, **{**budget_params(name, budget), **overrides})
