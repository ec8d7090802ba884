"""Tree policies: how each step's draft tree is shaped. Every policy is a small ``GrowthRule``
(``grow.py``) behind the ``TreePolicy`` protocol, registered by name in ``registry.py``.

    opt-tree        opt_tree.py     OPT-Tree, arXiv 2406.17276, Algorithm 1
    opt-tree-auto   auto.py         OPT-Tree with n and δ from a latency profile
    chain           chain.py        classic speculative decoding
    k-ary, binary   kary.py         full k-ary trees
    eagle-static    rank_paths.py   EAGLE-1's 25-node tree (a rank-path list)
    sequoia         sequoia.py      Sequoia's DP-optimal static tree (through the same rank-path rule)
    eagle2          eagle2.py       EAGLE-2's dynamic tree
    dynatree        dynatree.py     DynaTree's confidence-aware tree
    cum-logprob     cum_logprob.py  a level-wise beam by cumulative log-probability
"""
from .auto import OptTreeAutoConfig, OptTreeAutoPolicy, Profile
from .base import GrowthPolicy, HardwareAware, TreePolicy
from .chain import ChainConfig, ChainPolicy
from .opt_tree import OptTreeConfig, OptTreePolicy, trace_opt_tree
from .registry import POLICIES, make_policy, policy_for_budget, policy_params

__all__ = ["ChainConfig", "ChainPolicy", "GrowthPolicy", "HardwareAware", "OptTreeAutoConfig", "OptTreeAutoPolicy",
           "OptTreeConfig", "OptTreePolicy", "POLICIES", "Profile", "TreePolicy", "make_policy", "policy_for_budget",
           "policy_params", "trace_opt_tree"]
