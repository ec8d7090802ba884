"""The one place treeviz runs a model: re-decoding a prompt for the explorer widgets, through
``opttree_core``'s one entry point (``Session``).

The explorer's policy controls are typed from each registered policy's config
(``opttree_core.policies.registry``: its fields, their types, ``for_budget``), so every parameter
of every policy — including policies registered later — has a control.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunRequest:
    """What the explorer's controls say: the policy, its parameters (None: ``for_budget(16)``)
    and the decoding settings."""

    prompt: str
    policy: str = "opt-tree"
    params: dict | None = field(default=None)
    temperature: float = 0.0
    max_new_tokens: int = 32
    chat: bool = False
    seed: int = 0


def policy_names() -> list[str]:
    from opttree_core.policies.registry import POLICIES

    return sorted(POLICIES)


def policy_fields(name: str) -> dict[str, object]:
    """The policy's parameters and their types (``opttree_core.policies.registry.param_types``)."""
    from opttree_core.policies.registry import param_types

    return param_types(name)


def budget_params(name: str, budget: int) -> dict:
    """The policy's parameters at node budget ``budget`` (its ``for_budget``)."""
    from opttree_core.policies.registry import budget_params as at_budget

    return at_budget(name, budget)


def budget_keys(name: str) -> tuple[str, ...]:
    """The parameters the node budget sets (``opttree_core.policies.registry.budget_keys``)."""
    from opttree_core.policies.registry import budget_keys as set_by_budget

    return set_by_budget(name)


def parse_param(name: str, key: str, text: str):
    """A text control's value typed as the parameter (a one-line OptTreeError when it is not one)."""
    from opttree_core.policies.registry import parse_param as parse

    return parse(name, key, text)


class Rerunner:
    """Decodes prompts with one target and drafter, returning tree logs (``LogData``).

    ``target``: a ``LoadedModel`` or a spec for ``opttree_core.load_model`` (loaded on first
    use); ``drafter``: a ``Drafter`` or a spec for ``load_drafter`` (``"self"`` by default).
    Errors from the engine are ``OptTreeError`` with a one-line message.
    """

    def __init__(self, target, drafter="self"):
        self._target, self._drafter = target, drafter

    @property
    def target(self):
        if isinstance(self._target, str):
            from opttree_core import load_model

            self._target = load_model(self._target)
        return self._target

    @property
    def drafter(self):
        if isinstance(self._drafter, str):
            from opttree_core import load_drafter

            self._draft_name = self._drafter
            self._drafter = load_drafter(self._drafter, self.target)
        return self._drafter

    def draft_name(self) -> str:
        return getattr(self, "_draft_name", None) or getattr(self.drafter, "name", "draft")

    def run(self, request: RunRequest, on_step: Callable[[object], None] | None = None):
        """Decode ``request.prompt``; ``on_step(log_so_far)`` after each verified step when given."""
        session = self._session(request.policy, request.params)
        log = session.new_log(request.max_new_tokens)
        tokenizer = session.target.tokenizer
        callback = None if on_step is None else (lambda record: on_step(log.to_frames(tokenizer)))
        run = session.run(request.prompt, chat=request.chat, max_new_tokens=request.max_new_tokens,
                          temperature=request.temperature, seed=request.seed, on_step=callback, log=log)
        return run.frames()

    def regrow(self, data, step: int, policy: str, params: dict | None = None, room: int = 64):
        """One step: the tree ``policy`` grows at ``step`` of the log ``data``, from the identical prefix
        and root, verified by the target (``Session.regrow``); a one-step log. ``room``: the new tokens
        the step may make, so a tree near the end of the logged answer is not cut to the tokens that
        were left there (two policies compare at their full n)."""
        return self._session(policy, params).regrow(data, step, max_new_tokens=room).frames()

    def _session(self, policy: str, params: dict | None):
        from opttree_core import Session, make_policy

        params = budget_params(policy, 16) if params is None else params
        return Session(self.target, self.drafter, make_policy(policy, **params))
