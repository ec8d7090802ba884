"""What a tree policy is: the ``TreePolicy`` protocol, and ``GrowthPolicy``, the base every
registered policy uses: a config, a depth and a fresh ``GrowthRule`` per tree, grown by the
one loop in ``grow.py``.

Every policy honours ``depth_cap`` (the tokens still allowed, minus the bonus), so a step
never drafts past ``max_new_tokens``.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..errors import OptTreeError
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
              children: ChildSampling | None = None) -> DraftTree: ...

    def reset(self) -> None: ...

    def observe(self, record) -> None: ...


@runtime_checkable
class HardwareAware(Protocol):
    """A policy that needs a latency profile of the target and drafter before it can build
    (OPT-Tree auto). Whoever makes the policy gives it one (``tools.profile.calibrate``):
    ``generate`` never measures anything."""

    def use_profile(self, profile) -> None: ...

    @property
    def calibrated(self) -> bool: ...


class GrowthPolicy:
    """A policy whose tree is grown layer by layer by ``grow`` with the rule ``rule()`` makes.

    Subclasses set ``name`` and ``config`` and define ``depth`` (the most layers drafted),
    ``max_nodes`` and ``rule``; policies that learn from the acceptance history override
    ``reset``/``observe``."""

    name: str
    config: object

    @property
    def depth(self) -> int:
        raise NotImplementedError

    @property
    def max_nodes(self) -> int:
        raise NotImplementedError

    def rule(self) -> GrowthRule:
        raise NotImplementedError

    def build(self, drafter, root_token: int, depth_cap: int, device,
              children: ChildSampling | None = None) -> DraftTree:
        return grow(drafter, root_token, self.rule(), min(self.depth, depth_cap), device, children)

    def reset(self) -> None:
        pass

    def observe(self, record) -> None:
        pass


def check_int(value, what: str, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise OptTreeError(f"{what} must be an integer >= {low}, got {value!r}")


def check_prob(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise OptTreeError(f"{what} must lie in [0, 1], got {value!r}")
