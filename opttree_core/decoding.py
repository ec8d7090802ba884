"""The decoding loop: build the tree (drafter + policy) → verify (score, choose, commit) →
commit to the drafter → log, and the AR baseline.

Both loops call the target through ``modelcall.forward`` and move its state through
``TargetState.advance``, so their timings compare fairly.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .checks import check_int, check_real
from .drafters.base import Drafter, feature_layers
from .errors import OptTreeError
from .grow import ChildSampling
from .metrics import mean_acceptance_length, tokens_per_second
from .modelcall import model_device, timed_call
from .policies.base import TreePolicy
from .records import StepRecord
from .sampling import target_probs
from .syncs import AR_READ, host_read, to_device
from .tree import TreeLayer
from .treelog import TreeLog
from .verify import Sampling, TargetState, prefill_target, score_root, verify

CHILDREN = ("top-k", "sampled")


@dataclass(frozen=True)
class DecodeConfig:
    """max_new_tokens: hard cap on generated tokens. temperature 0 is greedy; above 0 the target's
    distribution (after top-k and top-p) is sampled, losslessly, with ``seed``. children:
    "top-k" (each node's children are the draft's most likely tokens) or "sampled" (drawn from
    the draft without replacement, verified with the draft's q: see ``sampling``). timing:
    synchronise the device around each phase so per-phase times are exact (off: no added
    host synchronisation)."""

    max_new_tokens: int = 128
    max_time: float | None = None  # wall-clock budget in seconds, checked after every step (as HF generate)
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    children: str = "top-k"  # how children are chosen: the draft's top-k, or "sampled" from it
    stop_at_eos: bool = True
    timing: bool = False
    progress: bool = False

    def __post_init__(self):
        check_int(self.max_new_tokens, "max_new_tokens")
        if self.max_time is not None:
            check_real(self.max_time, "max_time (seconds)", 0, open_low=True)
        check_real(self.temperature, "temperature", 0)
        check_int(self.top_k, "top_k (0: off)", 0)
        check_real(self.top_p, "top_p", 0, 1, open_low=True)
        check_int(self.seed, "seed", None)
        if self.children not in CHILDREN:
            raise OptTreeError(f"children must be one of {', '.join(CHILDREN)}, got {self.children!r}")

    def sampling(self, device) -> Sampling | None:
        """The verifier's sampling settings with a fresh seeded generator (None when greedy)."""
        if self.temperature == 0:
            return None
        generator = torch.Generator(device=device).manual_seed(self.seed)
        return Sampling(self.temperature, self.top_k, self.top_p, generator)

    def child_sampling(self, device) -> ChildSampling | None:
        """What policies pass to their TreeBuilders: None (top-k children) or a seeded child sampler."""
        if self.children == "top-k":
            return None
        return ChildSampling(torch.Generator(device=device).manual_seed(self.seed + 1))


@dataclass(frozen=True)
class DecodeResult:
    prompt_ids: list[int]
    token_ids: list[int]  # generated tokens only
    accept_lengths: list[int] = field(default_factory=list)  # A per step (bonus included)
    seconds: float = 0.0
    log: TreeLog | None = None

    @property
    def steps(self) -> int:
        return len(self.accept_lengths)

    @property
    def mal(self) -> float:
        return mean_acceptance_length(self.accept_lengths)

    @property
    def tokens_per_s(self) -> float:
        return tokens_per_second(len(self.token_ids), self.seconds)


StepCallback = Callable[[StepRecord], None]


def prompt_tensor(prompt_ids, vocab_size: int) -> torch.Tensor:
    """Prompt ids as a LongTensor (L,): one sequence of integer ids in [0, vocab_size). Text, a
    batch, floats or out-of-range ids are a one-line OptTreeError (batches are not supported)."""
    if isinstance(prompt_ids, str):
        raise OptTreeError("the prompt must be token ids (a 1-D tensor or list of ints), not text: encode it "
                           "first (encode_prompt), or give the text to Session.run")
    try:
        ids = torch.as_tensor(prompt_ids)
    except (TypeError, ValueError, RuntimeError) as e:
        raise OptTreeError(f"the prompt must be token ids (a 1-D tensor or list of ints), "
                           f"got {type(prompt_ids).__name__}") from e
    if ids.dim() != 1:
        raise OptTreeError(f"the prompt must be one sequence of token ids, shape (L,), got shape {tuple(ids.shape)}"
                           f"{': batches are not supported' if ids.dim() > 1 else ''}")
    if ids.numel() == 0:
        raise OptTreeError("the prompt is empty: give at least one token")
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise OptTreeError(f"prompt token ids must be integers, got {str(ids.dtype).removeprefix('torch.')}")
    if not (0 <= int(ids.min()) and int(ids.max()) < vocab_size):
        raise OptTreeError(f"prompt token ids must lie in [0, {vocab_size}) for this model, got "
                           f"{int(ids.min())}..{int(ids.max())}")
    return ids.to(torch.long)


def check_prompt(model, prompt_ids: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """A 1-D LongTensor of prompt ids that fits the model's context with the new tokens."""
    prompt_ids = prompt_tensor(prompt_ids, model.get_input_embeddings().weight.shape[0])
    context = getattr(model.config, "max_position_embeddings", None)
    if context is not None and prompt_ids.numel() + max_new_tokens > context:
        raise OptTreeError(
            f"prompt of {prompt_ids.numel()} tokens + max_new_tokens {max_new_tokens} "
            f"exceeds the model's context of {context} tokens")
    return prompt_ids.to(model_device(model))


class _Clock:
    """Phase timer; synchronises the device only when exact timing is asked for."""

    def __init__(self, device: torch.device, exact: bool):
        self.sync = exact and device.type == "cuda"
        self.t = time.perf_counter()

    def lap(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        elapsed, self.t = now - self.t, now
        return elapsed


class _TimedDrafter:
    """The drafter behind a stopwatch: its ``root_probs``/``expand``/``commit`` calls add up
    seconds, so a step's tree-building phase splits into drafting and the policy's own work.
    Synchronises the device around each call only when ``sync`` (``DecodeConfig.timing``)."""

    def __init__(self, drafter: Drafter, sync: bool):
        self.drafter, self.sync, self.seconds = drafter, sync, 0.0

    def __getattr__(self, name):  # name, vocab_size, ...: whatever the drafter has
        return getattr(self.drafter, name)

    def _timed(self, call, *args):
        seconds, out = timed_call(self.sync, call, *args)
        self.seconds += seconds
        return out

    def root_probs(self) -> torch.Tensor:
        return self._timed(self.drafter.root_probs)

    def expand(self, layer: TreeLayer) -> torch.Tensor:
        return self._timed(self.drafter.expand, layer)

    def commit(self, tokens: list[int], features: torch.Tensor, accepted_slots: list[int]) -> None:
        self._timed(self.drafter.commit, tokens, features, accepted_slots)

    def take(self) -> float:
        """Seconds spent in the drafter since the last ``take``."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def _eos_ids(model) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None) or getattr(model.config, "eos_token_id", None)
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


def _truncate_at_eos(tokens: list[int], eos: set[int]) -> tuple[list[int], bool]:
    for i, token in enumerate(tokens):
        if token in eos:
            return tokens[: i + 1], True
    return tokens, False


def _out_of_time(config: DecodeConfig, start: float) -> bool:
    return config.max_time is not None and time.perf_counter() - start >= config.max_time


def _sample(logits: torch.Tensor, sampling: Sampling) -> int:
    probs = target_probs(logits, sampling.temperature, sampling.top_k, sampling.top_p)[0]  # (V,)
    return int(torch.multinomial(probs, 1, generator=sampling.generator))


def _progress(config: DecodeConfig):
    if not config.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.max_new_tokens, unit="tok", leave=False)


@dataclass
class _Loop:
    """What one decoding carries from step to step."""

    state: TargetState
    device: torch.device
    drafter: _TimedDrafter
    policy: TreePolicy
    clock: _Clock
    sampling: Sampling | None
    children: ChildSampling | None
    eos: set[int]
    stop: torch.Tensor | None  # ``eos`` on the device: the policy drafts nothing below them


def _step(loop: _Loop, step: int, tokens_left: int) -> tuple[StepRecord, bool]:
    """One step: build the tree, verify it; returns its record and whether an EOS ended the output."""
    tree = loop.policy.build(loop.drafter, loop.state.root_token, tokens_left - 1, loop.device,
                             children=loop.children, stop=loop.stop)
    build_s = loop.clock.lap()
    draft_s = loop.drafter.take()  # includes the previous step's commit
    result = verify(loop.state, tree, loop.sampling)
    verify_s = loop.clock.lap()
    new, finished = _truncate_at_eos(result.new_tokens, loop.eos)
    record = StepRecord(step, tree, result.target_tokens, result.accepted, new, draft_s, verify_s,
                        max(build_s - draft_s, 0.0), result.features)
    loop.policy.observe(record)
    if not finished:
        loop.drafter.commit(new, result.features, result.slots)
    return record, finished


_KINDS = {"target_model": (torch.nn.Module, "the model (a LoadedModel's .model)"),
          "drafter": (Drafter, "a Drafter (load_drafter(...))"),
          "policy": (TreePolicy, "a TreePolicy (make_policy(name, ...))"),
          "config": (DecodeConfig, "a DecodeConfig"), "log": ((TreeLog, type(None)), "a TreeLog or None")}


def check_arguments(**given) -> None:
    """Each argument of ``generate`` has the right kind (``_KINDS``), or a one-line OptTreeError names it."""
    for name, value in given.items():
        kind, what = _KINDS[name]
        if not isinstance(value, kind):
            raise OptTreeError(f"{name} must be {what}, not {type(value).__name__}")


def generate(target_model, drafter: Drafter, policy: TreePolicy, prompt_ids, config: DecodeConfig = DecodeConfig(),
             log: TreeLog | None = None, on_step: StepCallback | None = None,
             max_steps: int | None = None) -> DecodeResult:
    """Tree speculative decoding of one prompt (greedy: output equals plain greedy decoding).

    Every step's ``StepRecord`` goes to ``log.record`` and to ``on_step``. ``max_steps``: stop after
    that many steps (1: the one tree decoding grows after ``prompt_ids``, as the explorers re-grow a
    logged step from the text committed before it). A policy that needs a
    latency profile (opt-tree-auto) must have one already (``profiling.calibrate``; ``Session.run``
    gives it one)."""
    check_arguments(target_model=target_model, drafter=drafter, policy=policy, config=config, log=log)
    if max_steps is not None:
        check_int(max_steps, "max_steps")
    prompt = check_prompt(target_model, prompt_ids, config.max_new_tokens)
    device, eos = model_device(target_model), _eos_ids(target_model) if config.stop_at_eos else set()
    start = time.perf_counter()
    state, features = prefill_target(target_model, prompt, feature_layers(drafter))
    drafter.start(prompt, features)
    clock = _Clock(device, config.timing)
    loop = _Loop(state, device, _TimedDrafter(drafter, clock.sync), policy, clock, config.sampling(device),
                 config.child_sampling(device), eos, to_device(sorted(eos), device) if eos else None)
    out, lengths, bar = [], [], _progress(config)
    policy.reset()
    while len(out) < config.max_new_tokens:
        record, finished = _step(loop, len(lengths), config.max_new_tokens - len(out))
        out += record.new_tokens
        lengths.append(record.a)
        for sink in (log.record if log is not None else None, on_step):
            if sink is not None:
                sink(record)
        if bar is not None:
            bar.update(record.a)
        clock.lap()  # logging and callbacks belong to no phase
        if finished or _out_of_time(config, start) or len(lengths) == max_steps:
            break
    if bar is not None:
        bar.close()
    return DecodeResult(prompt.tolist(), out, lengths, time.perf_counter() - start, log)


def generate_autoregressive(target_model, prompt_ids, config: DecodeConfig = DecodeConfig()) -> DecodeResult:
    """Plain decoding, one target forward per token, through the same model-call path and state
    update (greedy, or sampled from the same processed distribution as tree decoding)."""
    check_arguments(target_model=target_model, config=config)
    prompt = check_prompt(target_model, prompt_ids, config.max_new_tokens)
    eos = _eos_ids(target_model) if config.stop_at_eos else set()
    sampling = config.sampling(prompt.device)
    start = time.perf_counter()
    state, _ = prefill_target(target_model, prompt)
    out = []
    while len(out) < config.max_new_tokens:
        logits = score_root(state).logits  # (1, V)
        with host_read(AR_READ, logits.device):  # plain decoding's one host read per token
            token = int(logits[-1].argmax()) if sampling is None else _sample(logits[-1:], sampling)
        out.append(token)
        state.advance([token])
        if token in eos or _out_of_time(config, start):
            break
    return DecodeResult(prompt.tolist(), out, [1] * len(out), time.perf_counter() - start)
