"""What a tree policy is: the ``TreePolicy`` protocol, and ``GrowthPolicy``, the base every
registered policy uses: a config, a depth and a fresh ``GrowthRule`` per tree, grown by the
one loop in ``grow.py``.

Every policy honours ``depth_cap`` (the tokens still allowed, minus the bonus), so a step
never drafts past ``max_new_tokens``; the policies that choose their frontier on the host honour
``stop`` (the target's end-of-sequence ids: nothing is drafted below one, ``grow.py``).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..grow import ChildSampling, GrowthRule, grow
from ..tree import DraftTree


@runtime_checkable
class TreePolicy(Protocol):
    """``build`` shapes one step's tree. ``children`` (None: the draft's top-k) is passed on to
    the growth loop, which then draws children by sampling instead. ``reset`` is called once
    before each prompt and ``observe`` after every verified step, so policies that adapt to the
    acceptance history (DynaTree) or to observed step times (OPT-Tree auto) can; the others do
    nothing. ``record`` is the step's ``records.StepRecord`` (its tree, A, and timings)."""

    name: str

    @property
    def max_nodes(self) -> int:
        """Upper bound on drafted (non-root) nodes in one tree."""

    def build(self, drafter, root_token: int, depth_cap: int, device,
              children: ChildSampling | None = None, stop: torch.Tensor | None = None) -> DraftTree: ...

    def reset(self) -> None: ...

    def observe(self, record) -> None: ...


@runtime_checkable
class HardwareAware(Protocol):
    """A policy that needs a latency profile of the target and drafter before it can build
    (OPT-Tree auto). Whoever makes the policy gives it one (``profiling.calibrate``; ``Session.run`` does it):
    ``generate`` never measures anything."""

    def use_profile(self, profile) -> None: ...

    def profile_sizes(self) -> tuple[int, ...]: ...

    @property
    def calibrated(self) -> bool: ...


class GrowthPolicy:
    """A policy whose tree is grown layer by layer by ``grow`` with the rule ``rule()`` makes.

    A subclass names itself (``name``), its config dataclass (``config_class``: the default config
    is ``config_class()``) and its rule (``rule_class``, whose ``host_reads`` are the policy's), and
    makes a fresh rule per tree in ``rule``. ``depth`` (the most layers drafted) and ``max_nodes``
    are the config's attributes named by ``depth_field`` and ``max_nodes_field`` (a field, or a
    property where they are worked out). Policies that learn from the acceptance history override
    ``reset`` (called here, once, and before each prompt) and ``observe``."""

    name: str
    config_class: type
    rule_class: type[GrowthRule] = GrowthRule
    depth_field, max_nodes_field = "max_depth", "nodes"

    def __init__(self, config=None):
        self.config = self.config_class() if config is None else config
        self.reset()

    @property
    def depth(self) -> int:
        return getattr(self.config, self.depth_field)

    @property
    def max_nodes(self) -> int:
        return getattr(self.config, self.max_nodes_field)

    @property
    def host_reads(self) -> tuple[str, ...]:
        """The named host reads (``syncs``) its growth makes besides the step's own."""
        return self.rule_class.host_reads

    def rule(self) -> GrowthRule:
        raise NotImplementedError

    def build(self, drafter, root_token: int, depth_cap: int, device,
              children: ChildSampling | None = None, stop: torch.Tensor | None = None) -> DraftTree:
        return grow(drafter, root_token, self.rule(), min(self.depth, depth_cap), device, children, stop)

    def reset(self) -> None:
        pass

    def observe(self, record) -> None:
        pass
