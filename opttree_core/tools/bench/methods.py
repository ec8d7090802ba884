"""The methods a benchmark compares and how one (prompt, method) pair runs.

Methods (the grid of ``config.BenchConfig``): tree decoding for drafters × policies × budgets ×
temperatures, and peers per temperature: autoregressive decoding (``generate_autoregressive``),
Hugging Face assisted generation with the same draft (``generate(assistant_model=)``; only drafts
that are full causal LMs — EAGLE heads and n-gram tables are skipped with a logged reason) and HF
prompt lookup (``prompt_lookup_num_tokens``, the peer of ``ngram``).

Peers' numbers: MAL = new tokens / target forward calls (counted by a hook on the target), so HF's
prefill, which yields a token, counts as a step; verify_s = seconds inside the target's forward,
draft_s = the rest; build_s and E(A) are null. AR rows have mal 1 and null time split.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...api import encode_prompt
from ...decoding import check_prompt, generate_autoregressive
from ...draft_vocab import draft_vocab_size
from ...drafters import DraftLMDrafter
from ...errors import OptTreeError
from ...machine import describe_machine
from ...metrics import mean_expected_acceptance, pooled_mal, tokens_per_second
from ...models import LoadedModel
from ...policies.registry import policy_for_budget
from ...records import MACHINE_COLUMN, LogData
from ...session import Session
from .config import BenchConfig, BenchPrompt, turn_id


@dataclass(frozen=True)
class Method:
    label: str
    kind: str  # "tree" | "ar" | "hf-assisted" | "hf-prompt-lookup"
    temperature: float
    policy: str | None = None
    budget: int | None = None
    drafter: str | None = None

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "-", self.label.replace("=", "").replace(" ", "_")).strip("-")


def _t(temperature: float) -> str:
    return f"T={temperature:g}"


def hf_assistant(drafter):
    """The HF causal LM behind a drafter, usable as ``generate(assistant_model=)``; None if there is none,
    or if the drafter drafts from a draft vocabulary (``generate`` would draft from the full one: the
    same model's run without it is that peer)."""
    return drafter.model if isinstance(drafter, DraftLMDrafter) and draft_vocab_size(drafter) is None else None


def _no_assistant(name: str, drafter) -> str:
    if isinstance(drafter, DraftLMDrafter):
        return (f"hf-assisted with '{name}': generate(assistant_model=) cannot draft from its draft vocabulary "
                "(it is the same peer as with the full vocabulary)")
    return (f"hf-assisted with '{name}': its {type(drafter).__name__} is not a full causal LM, so "
            "generate(assistant_model=) cannot use it")


def build_methods(config: BenchConfig, drafters: dict) -> tuple[list[Method], list[str]]:
    """The method grid in a fixed order, and the peers that cannot run, each with its reason."""
    methods, skipped = [], []
    for t in config.temperatures:
        methods.append(Method(f"ar {_t(t)}", "ar", t))
        for name in config.drafters:
            for policy in config.policies:
                methods += [Method(f"{policy} n={n} {name} {_t(t)}", "tree", t, policy, n, name)
                            for n in config.budgets_of(policy)]
            if "hf-assisted" in config.peers and hf_assistant(drafters[name]) is not None:
                methods.append(Method(f"hf-assisted {name} {_t(t)}", "hf-assisted", t, drafter=name))
        if "hf-prompt-lookup" in config.peers:
            k = config.prompt_lookup_num_tokens
            methods.append(Method(f"hf-prompt-lookup k={k} {_t(t)}", "hf-prompt-lookup", t))
    if "hf-assisted" in config.peers:
        skipped += [_no_assistant(name, d) for name, d in drafters.items() if hf_assistant(d) is None]
    return methods, skipped


class _TargetCalls:
    """Counts the target's forward calls and the seconds spent inside them (forward hooks)."""

    def __init__(self, model):
        self.calls, self.seconds, self._t = 0, 0.0, 0.0
        self.handles = [model.register_forward_pre_hook(self._pre), model.register_forward_hook(self._post)]

    def _pre(self, module, args):
        self._t = time.perf_counter()

    def _post(self, module, args, output):
        self.calls += 1
        self.seconds += time.perf_counter() - self._t

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _peer_row(tokens: list[int], steps: int, seconds: float, verify_s: float | None) -> dict:
    row = {"new_tokens": len(tokens), "steps": steps, "mal": pooled_mal(len(tokens), steps), "seconds": seconds,
           "tokens_per_s": tokens_per_second(len(tokens), seconds), "draft_s": None, "verify_s": None,
           "build_s": None, "expected_acceptance": None, "log_dir": None}
    if verify_s is not None:
        row.update(draft_s=max(seconds - verify_s, 0.0), verify_s=verify_s)
    return row


def _run_ar(bench, method: Method, prompt_ids: torch.Tensor) -> tuple[dict, list[int]]:
    torch.manual_seed(bench.config.seed)
    result = generate_autoregressive(bench.target.model, prompt_ids, bench.config.decode_config(method.temperature))
    return _peer_row(result.token_ids, result.steps, result.seconds, None), result.token_ids


def _pad_id(model) -> int | None:
    pad = model.generation_config.pad_token_id
    eos = model.generation_config.eos_token_id
    return pad if pad is not None else eos[0] if isinstance(eos, list) else eos


def _run_hf(bench, method: Method, prompt_ids: torch.Tensor) -> tuple[dict, list[int]]:
    """HF generate with an assistant model or prompt lookup, same length cap, temperature and seed."""
    model, config = bench.target.model, bench.config
    kwargs = {"max_new_tokens": config.max_new_tokens, "attention_mask": torch.ones_like(prompt_ids)[None],
              "pad_token_id": _pad_id(model),
              "do_sample": method.temperature > 0}
    if method.temperature > 0:
        kwargs.update(temperature=method.temperature, top_k=0, top_p=1.0)
    if config.max_time is not None:
        kwargs["max_time"] = config.max_time
    if method.kind == "hf-assisted":
        kwargs["assistant_model"] = hf_assistant(bench.drafters[method.drafter])
    else:
        kwargs["prompt_lookup_num_tokens"] = config.prompt_lookup_num_tokens
    torch.manual_seed(config.seed)
    counter = _TargetCalls(model)
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(prompt_ids[None], **kwargs)
        seconds = time.perf_counter() - start
    finally:
        counter.remove()
    tokens = out[0, prompt_ids.numel():].tolist()
    return _peer_row(tokens, counter.calls, seconds, counter.seconds), tokens


def _run_tree(bench, method: Method, prompt: BenchPrompt, prompt_ids: torch.Tensor) -> tuple[dict, list[int], LogData]:
    log_dir = Path("logs") / method.slug / prompt.prompt_id
    run = bench.session(method).run(prompt_ids, bench.config.decode_config(method.temperature),
                                    prompt_text=prompt.text, chat=prompt.chat)
    result, log = run.result, run.frames()  # the log as data: what Run.save writes, written by the caller
    steps = log.steps
    row = {"new_tokens": len(result.token_ids), "steps": result.steps, "mal": result.mal, "seconds": result.seconds,
           "tokens_per_s": result.tokens_per_s, "draft_s": float(steps["draft_s"].sum()),
           "verify_s": float(steps["verify_s"].sum()), "build_s": float(steps["build_s"].sum()),
           "expected_acceptance": mean_expected_acceptance(steps["ea"].tolist()), "log_dir": log_dir.as_posix()}
    return row, result.token_ids, log


@dataclass
class Bench:
    """A run in progress: its config, models, folder and the finished pairs' progress records."""

    config: BenchConfig
    target: LoadedModel
    drafters: dict
    out_dir: Path | None  # None in a Ray worker: only the driver writes the run folder
    records: dict  # (prompt_id, method label) → {"row": ..., "token_ids": ...}
    sessions: dict = field(default_factory=dict)  # method label → its Session

    def session(self, method: Method) -> Session:
        """The method's session: its drafter and its policy at its budget (with the config's overrides),
        made once per method (``generate`` resets the policy per prompt; the session calibrates a
        policy that needs a latency profile before its first prompt)."""
        if method.label not in self.sessions:
            policy = policy_for_budget(method.policy, method.budget, **self.config.policy_params.get(method.policy, {}))
            self.sessions[method.label] = Session(self.target, self.drafters[method.drafter], policy)
        return self.sessions[method.label]


def conversation_ids(bench: Bench, prompt: BenchPrompt, temperature: float) -> torch.Tensor:
    """The prompt's token ids (L,): its text, or for a later turn the conversation so far, whose
    earlier answers are AR's at the same temperature."""
    tokenizer = bench.target.tokenizer
    if prompt.turn == 0:
        return encode_prompt(tokenizer, prompt.text, chat=prompt.chat)
    messages, base = [], prompt.prompt_id.rsplit("-turn", 1)[0]
    for k in range(prompt.turn):
        answer = bench.records.get((turn_id(base, k), f"ar {_t(temperature)}"))
        if answer is None:
            raise OptTreeError(f"{prompt.prompt_id}: turn {k + 1}'s AR answer is missing from the run")
        messages += [{"role": "user", "content": prompt.turns[k]},
                     {"role": "assistant", "content": tokenizer.decode(answer["token_ids"], skip_special_tokens=True)}]
    messages.append({"role": "user", "content": prompt.text})
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    return torch.tensor(list(ids), dtype=torch.long)


@dataclass(frozen=True)
class PairOutput:
    """What one (prompt, method) pair made: its progress record (``{"row": ..., "token_ids": ...}``, the
    row without output_matches_ar) and, for tree decoding, its tree log as data, to be written at
    ``out_dir / record["row"]["log_dir"]`` (``records.write_log``, what ``Run.save`` does) by the one
    process that writes the run folder."""

    record: dict
    log: LogData | None = None


def run_pair(bench: Bench, method: Method, prompt: BenchPrompt) -> PairOutput:
    """Run one method on one prompt; writes nothing (``run.commit_pair`` does)."""
    ids = check_prompt(bench.target.model, conversation_ids(bench, prompt, method.temperature),
                       bench.config.max_new_tokens)
    log = None
    if method.kind == "tree":
        row, tokens, log = _run_tree(bench, method, prompt, ids)
    elif method.kind == "ar":
        row, tokens = _run_ar(bench, method, ids)
    else:
        row, tokens = _run_hf(bench, method, ids)
    ident = {"method": method.label, "kind": method.kind, "policy": method.policy, "budget": method.budget,
             "drafter": method.drafter, "temperature": method.temperature, "dataset": prompt.dataset,
             "category": prompt.category, "prompt_id": prompt.prompt_id,
             MACHINE_COLUMN: describe_machine(bench.config.device)}
    return PairOutput({"row": {**ident, **row}, "token_ids": tokens}, log)


