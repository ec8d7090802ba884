"""The one place treeviz runs a model: re-decoding a prompt for the explorer widgets,
through ``opttree_core``'s public API (``make_policy``, ``decode_prompt``).

Widget controls map onto each registered policy's config fields by name (``CONTROL_OF``),
so a policy registered later in ``opttree_core.registry.POLICIES`` gets the controls whose
names its config shares, and defaults for the rest.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from .logs import append_steps, frames_from_step

# policy config field → the control that sets it (a chain's length is its depth)
CONTROL_OF = {"nodes": "nodes", "threshold": "threshold", "max_depth": "depth", "length": "depth"}


@dataclass(frozen=True)
class RunRequest:
    """What the explorer's controls say."""

    prompt: str
    policy: str = "opt-tree"
    nodes: int = 16
    threshold: float = 0.2
    depth: int = 6
    temperature: float = 0.0
    max_new_tokens: int = 32
    chat: bool = False
    seed: int = 0


def policy_names() -> list[str]:
    from opttree_core.registry import POLICIES

    return sorted(POLICIES)


def policy_controls(name: str) -> set[str]:
    """The controls that the policy ``name`` uses."""
    from opttree_core.registry import POLICIES

    config_cls = POLICIES[name][1]
    return {CONTROL_OF[f.name] for f in dataclasses.fields(config_cls) if f.name in CONTROL_OF}


def policy_params(request: RunRequest) -> dict:
    """Keyword arguments for ``make_policy(request.policy, ...)``."""
    from opttree_core.registry import POLICIES

    config_cls = POLICIES[request.policy][1] if request.policy in POLICIES else None
    fields = [f.name for f in dataclasses.fields(config_cls)] if config_cls else []
    return {f: getattr(request, CONTROL_OF[f]) for f in fields if f in CONTROL_OF}


class Rerunner:
    """Decodes prompts with one target and drafter, returning tree logs (``TreeLogData``).

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
        from opttree_core import (
            DecodeConfig,
            RunInfo,
            decode_prompt,
            encode_prompt,
            make_policy,
        )

        policy = make_policy(request.policy, **policy_params(request))
        config = DecodeConfig(max_new_tokens=request.max_new_tokens, temperature=request.temperature)
        target, drafter = self.target, self.drafter
        prompt_ids = encode_prompt(target.tokenizer, request.prompt, chat=request.chat)
        info = RunInfo(target=target.name, draft=self.draft_name(), policy=policy.name,
                       policy_config=dataclasses.asdict(policy.config), decode_config=dataclasses.asdict(config),
                       prompt=request.prompt, chat=request.chat, seed=request.seed, device=str(target.model.device),
                       dtype=str(target.model.dtype).removeprefix("torch."))
        callback = None
        if on_step is not None:
            meta = dataclasses.asdict(info)
            so_far = []

            def callback(step, tree, result):
                frame = frames_from_step(step, tree, result, target.tokenizer, meta)
                so_far[:] = [append_steps(so_far[0] if so_far else None, frame)]
                on_step(so_far[0])

        result = decode_prompt(target, drafter, policy, prompt_ids, config, info, on_step=callback)
        return result.log.to_frames(target.tokenizer)
