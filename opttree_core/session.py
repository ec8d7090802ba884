"""One recorded run in one call: the entry point the CLI, the demo, the bench harness and the
explorer widgets share.

    from opttree_core import Session

    session = Session.load("smollm2-135m", draft="eagle-smollm2", policy="opt-tree", nodes=16)
    run = session.run("Why is the sky blue?", chat=True, max_new_tokens=64)
    print(run.text, run.result.mal, run.result.tokens_per_s)
    run.save("out/sky")               # the tree log: every tree of the run (Parquet + meta.json)

A ``Session`` holds one target, one drafter and one policy. ``run`` checks the prompt, gives a
hardware-aware policy (opt-tree-auto) its latency profile before the first decode
(``profiling.calibrate``: measured once per machine and cached), sizes the ``TreeLog``, decodes
with ``decoding.generate`` and fills the log's meta from what the session holds (``RunInfo``:
made here and nowhere else). Lower-level pieces stay public for notebooks that take a step
apart: ``generate``, ``verify``, ``TreeLog``.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path

import torch

from .api import RunInfo, encode_prompt
from .decoding import DecodeConfig, DecodeResult, check_prompt, generate
from .draft_vocab import draft_vocab_size
from .drafters.base import Drafter
from .drafters.registry import load_drafter
from .errors import OptTreeError
from .memory import check_tree_memory
from .modelcall import model_device
from .models import LoadedModel, load_model
from .policies.base import HardwareAware, TreePolicy
from .policies.registry import make_policy, policy_for_budget
from .profiling import calibrate
from .records import LogData, StepRecord
from .treelog import TreeLog


@dataclass(frozen=True)
class Run:
    """One decoded prompt: ``result`` (tokens, steps, MAL, tokens/s; ``result.log`` the TreeLog),
    the generated ``text`` and the log's ``meta``."""

    result: DecodeResult
    text: str | None
    tokenizer: object = None

    @property
    def log(self) -> TreeLog:
        return self.result.log

    @property
    def meta(self) -> dict:
        return self.result.log.meta

    def frames(self) -> LogData:
        """The log as frames (nodes, steps, meta), every token's text included."""
        return self.log.to_frames(self.tokenizer)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the tree log directory atomically (``records.write_log``); returns its path."""
        return self.log.save(path, tokenizer=self.tokenizer)


def _config_dict(policy) -> dict:
    """The policy's config as a dict (a policy without a dataclass config has none to record)."""
    config = getattr(policy, "config", None)
    return asdict(config) if is_dataclass(config) else {}


def _check_type(value, kind, what: str, hint: str = "") -> None:
    if not isinstance(value, kind):
        raise OptTreeError(f"{what} must be a {kind.__name__}, not {type(value).__name__}{hint}")


class Session:
    """A target, a drafter and a policy, ready to decode prompts into recorded runs.

    ``Session(target, drafter, policy)`` takes loaded objects (``load_model``, ``load_drafter``,
    ``make_policy``); ``Session.load`` takes their names."""

    def __init__(self, target: LoadedModel, drafter: Drafter, policy: TreePolicy):
        _check_type(target, LoadedModel, "the target", ": load one with load_model(...) or use Session.load")
        _check_type(drafter, Drafter, "the drafter", ": load one with load_drafter(...) or use Session.load")
        _check_type(policy, TreePolicy, "the policy", ": make one with make_policy(...) or name it in Session.load")
        self.target, self.drafter, self.policy = target, drafter, policy

    @classmethod
    def load(cls, target: str = "smollm2-135m", draft: str = "eagle-smollm2", policy: str | TreePolicy = "opt-tree",
             nodes: int | None = None, *, device: str = "cpu", dtype: str = "auto", draft_vocab: int | None = None,
             **policy_params) -> Session:
        """Load ``target`` and ``draft`` by name (``load_model`` / ``load_drafter``) and make ``policy``:
        a registered name with its config's fields as keyword arguments (``nodes``: its configuration
        at that node budget, ``policy_for_budget``), or a policy object."""
        policy = cls._policy(policy, nodes, policy_params)
        loaded = load_model(target, device=device, dtype=dtype)
        return cls(loaded, load_drafter(draft, loaded, draft_vocab=draft_vocab, device=device, dtype=dtype), policy)

    @staticmethod
    def _policy(policy, nodes: int | None, params: dict) -> TreePolicy:
        if isinstance(policy, TreePolicy):
            if nodes is not None or params:
                raise OptTreeError("give the policy's settings either in the policy object or as arguments, not both")
            return policy
        _check_type(policy, str, "the policy", ": a registered name or a policy object")
        return make_policy(policy, **params) if nodes is None else policy_for_budget(policy, nodes, **params)

    @property
    def device(self) -> torch.device:
        return model_device(self.target.model)

    def encode(self, prompt, chat: bool = False) -> torch.Tensor:
        """Token ids (L,) of ``prompt``: text (through the chat template when ``chat``), or ids as they are."""
        return encode_prompt(self.target.tokenizer, prompt, chat=chat) if isinstance(prompt, str) else prompt

    def new_log(self, max_new_tokens: int) -> TreeLog:
        """An empty TreeLog sized for this policy (every tree fits) on the target's device."""
        return TreeLog(max_steps=max_new_tokens, max_nodes=self.policy.max_nodes + 1, device=self.device)

    def run(self, prompt, config: DecodeConfig | None = None, *, chat: bool = False, prompt_text: str | None = None,
            log_path: str | os.PathLike | None = None, on_step: Callable[[StepRecord], None] | None = None,
            log: TreeLog | None = None, max_steps: int | None = None, **decode_options) -> Run:
        """Decode one prompt (text, or token ids) into a recorded run.

        ``config`` or ``decode_options`` (``DecodeConfig``'s fields: max_new_tokens, temperature, ...)
        set the decoding; ``chat``: text goes through the chat template (ids are taken as they are, and
        ``chat`` records that they were made with it); ``prompt_text`` names a prompt given as ids in the meta; ``log_path`` writes
        the log there (atomically) at the end; ``on_step`` gets every step's ``StepRecord``; ``log``
        (from ``new_log``) lets a caller watch the log fill from ``on_step``; ``max_steps`` stops after
        that many steps (``regrow``)."""
        config = self._config(config, decode_options)
        if log is not None:
            _check_type(log, TreeLog, "log", ": make one with session.new_log(max_new_tokens)")
        ids = check_prompt(self.target.model, self.encode(prompt, chat), config.max_new_tokens)
        check_tree_memory(self.policy.max_nodes, config.max_new_tokens, self.device, model=self.target.model,
                          prompt_len=len(ids))
        calibrate(self.policy, self.target.model, self.drafter)
        log = self.new_log(config.max_new_tokens) if log is None else log
        info = self._info(config, prompt if isinstance(prompt, str) else prompt_text, chat)
        log.meta.update(asdict(info))
        torch.manual_seed(config.seed)
        result = generate(self.target.model, self.drafter, self.policy, ids, config, log=log, on_step=on_step,
                          max_steps=max_steps)
        log.meta.update(info.to_meta(ids.tolist(), result, self.target.tokenizer),
                        draft_vocab=draft_vocab_size(self.drafter), **self._latency_profile())
        run = Run(result, log.meta["text"], self.target.tokenizer)
        if log_path is not None:
            run.save(log_path)
        return run

    def regrow(self, data: LogData, step: int, config: DecodeConfig | None = None, **decode_options) -> Run:
        """The tree this session's policy grows at ``step`` of the logged run ``data``: one step decoded
        from the identical prefix (its prompt and the tokens committed before that step, so the same
        root), verified by this session's target; decoding settings default to the log's (its tokens
        left, temperature, seed). With the policy that made the log (greedy) it is the logged tree
        again; with another policy or budget, what that one would have drafted there."""
        prefix = data.prefix(step)
        logged = data.meta.get("decode_config") or {}
        left = max(int(logged.get("max_new_tokens", 64)) - (len(prefix) - len(data.meta["prompt_ids"])), 1)
        defaults = {"max_new_tokens": left, "temperature": logged.get("temperature", 0.0), "seed": logged.get("seed", 0)}
        config = self._config(config, decode_options if config is not None else {**defaults, **decode_options})
        return self.run(torch.tensor(prefix), config, prompt_text=data.meta.get("prompt"),
                        chat=bool(data.meta.get("chat")), max_steps=1)

    def _latency_profile(self) -> dict:
        """``latency_profile``: the key of the profile a hardware-aware policy decided with (machine,
        threads, dtype, kernels, drafter), so a log says which costs it was built for."""
        profile = getattr(self.policy, "profile", None) if isinstance(self.policy, HardwareAware) else None
        return {"latency_profile": dict(profile.key)} if hasattr(profile, "key") else {}

    @staticmethod
    def _config(config: DecodeConfig | None, options: dict) -> DecodeConfig:
        if config is None:
            unknown = sorted(set(options) - {f.name for f in fields(DecodeConfig)})
            if unknown:
                raise OptTreeError(f"unknown decoding setting {unknown[0]!r}: DecodeConfig takes "
                                   f"{', '.join(f.name for f in fields(DecodeConfig))}")
            return DecodeConfig(**options)
        _check_type(config, DecodeConfig, "config", "")
        if options:
            raise OptTreeError(f"give decoding settings either in config or as arguments, not both "
                               f"({', '.join(sorted(options))})")
        return config

    def _info(self, config: DecodeConfig, prompt_text: str | None, chat: bool) -> RunInfo:
        model = self.target.model
        return RunInfo(target=self.target.name, draft=self.drafter.name, policy=self.policy.name,
                       policy_config=_config_dict(self.policy), decode_config=asdict(config), prompt=prompt_text,
                       chat=chat, seed=config.seed, device=str(self.device),
                       dtype=str(model.dtype).removeprefix("torch."))
