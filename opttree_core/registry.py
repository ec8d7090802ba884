"""Every tree policy by name, and the one way to make one (the CLI, the bench harness and
the widgets all go through ``make_policy`` / ``policy_for_budget``).

Each config class has ``for_budget(nodes)``: the policy's natural configuration drafting at
most ``nodes`` nodes per step, so a benchmark grid over node budgets means the same for all.
"""
from __future__ import annotations

from dataclasses import fields

from .errors import OptTreeError
from .policies import ChainConfig, ChainPolicy, OptTreeConfig, OptTreePolicy, TreePolicy
from .sequoia import SequoiaConfig, SequoiaPolicy
from .auto import OptTreeAutoConfig, OptTreeAutoPolicy
from . import zoo

POLICIES = {
    "opt-tree": (OptTreePolicy, OptTreeConfig),
    "chain": (ChainPolicy, ChainConfig),
    "sequoia": (SequoiaPolicy, SequoiaConfig),
    "opt-tree-auto": (OptTreeAutoPolicy, OptTreeAutoConfig),
    "k-ary": (zoo.KAryPolicy, zoo.KAryConfig),
    "binary": (zoo.BinaryTreePolicy, zoo.BinaryTreeConfig),
    "eagle-static": (zoo.EagleStaticPolicy, zoo.EagleStaticConfig),
    "eagle2": (zoo.Eagle2Policy, zoo.Eagle2Config),
    "dynatree": (zoo.DynaTreePolicy, zoo.DynaTreeConfig),
    "cum-logprob": (zoo.CumLogProbPolicy, zoo.CumLogProbConfig),
}


def _spec(name: str):
    if name not in POLICIES:
        raise OptTreeError(f"unknown policy {name!r}: choose one of {', '.join(sorted(POLICIES))}")
    return POLICIES[name]


def policy_params(name: str) -> list[str]:
    """The names of a policy's parameters (its config's fields)."""
    return [f.name for f in fields(_spec(name)[1])]


def make_policy(name: str, **params) -> TreePolicy:
    """A policy by name with its config's fields as keyword arguments."""
    policy_cls, config_cls = _spec(name)
    unknown = sorted(set(params) - set(policy_params(name)))
    if unknown:
        raise OptTreeError(f"policy {name!r} has no parameter {unknown[0]!r}: it takes {', '.join(policy_params(name))}")
    return policy_cls(config_cls(**params))


def policy_for_budget(name: str, nodes: int, **overrides) -> TreePolicy:
    """A policy at node budget ``nodes`` (its config's ``for_budget``), with fields overridden."""
    policy_cls, config_cls = _spec(name)
    base = config_cls.for_budget(nodes)
    return make_policy(name, **{**{f.name: getattr(base, f.name) for f in fields(config_cls)}, **overrides})
