"""The public entry points the CLI, the demo, the benchmarks and the explorer widget share:
build a drafter from a name, encode a prompt, decode it with logging, describe a run."""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import torch

from .decoding import DecodeConfig, DecodeResult, generate
from .draft_vocab import draft_vocab_size
from .drafters import Drafter, DraftLMDrafter, NGramDrafter, self_drafter
from .errors import OptTreeError
from .memory import check_tree_memory
from .models import LoadedModel, check_same_tokenizer, load_model
from .policies import TreePolicy
from .shipped import load_draft, resolve_manifest
from .treelog import TreeLog

SELF_DRAFT = "self"
NGRAM_DRAFT = "ngram"


def load_drafter(spec: str, target: LoadedModel, draft_vocab: int | None = None, **load_options) -> Drafter:
    """A drafter by name: ``"self"`` (the target drafts for itself: the greedy oracle), ``"ngram"``
    (training-free prompt lookup with real distributions), a trained
    draft shipped with the package (``eagle-smollm2``, ``tiny-smollm2``) or saved by
    ``opttree_core.train`` (a path to its ``.json``/``.safetensors``), or any model ``load_model`` takes.

    ``draft_vocab`` (trained drafts only): propose only the K most frequent tokens (0: all; None: the
    draft's default, see ``draft_vocab.py``)."""
    manifest = resolve_manifest(spec)
    if manifest is None and str(spec).endswith((".json", ".safetensors")):
        raise OptTreeError(f"draft '{spec}': no such trained draft (its manifest "
                           f"{Path(spec).with_suffix('.json')} is not there)")
    if draft_vocab and manifest is None:
        raise OptTreeError(f"a draft vocabulary needs a trained draft with token counts, and '{spec}' is not one")
    if spec == SELF_DRAFT:
        return self_drafter(target.model)
    if spec == NGRAM_DRAFT:
        return NGramDrafter(target.model.get_output_embeddings().weight.shape[0], device=target.model.device)
    if manifest is not None:
        return load_draft(manifest, target, name=str(spec), draft_vocab=draft_vocab)
    draft = load_model(spec, **load_options)
    check_same_tokenizer(target, draft)
    return DraftLMDrafter(draft.model, name=draft.name)


def check_prompt_text(text: str, what: str = "the prompt") -> str:
    """``text`` when it is non-empty text a tokenizer can take (valid Unicode, so encodable as
    UTF-8); otherwise a one-line OptTreeError naming the first bad character."""
    if not isinstance(text, str):
        raise OptTreeError(f"{what} must be text, not {type(text).__name__}")
    if not text.strip():
        raise OptTreeError(f"{what} is empty: give some text to continue")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        bad = (f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF  # undecodable bytes of a command line
               else f"lone surrogate U+{code:04X}")
        raise OptTreeError(f"{what} is not valid UTF-8 text: {bad} at character {e.start}") from e
    return text


def encode_prompt(tokenizer, text: str, chat: bool = False) -> torch.Tensor:
    """Token ids of ``text``, through the tokenizer's chat template when ``chat`` is set. Shape (L,)."""
    check_prompt_text(text)
    if tokenizer is None:
        raise OptTreeError("this model has no tokenizer, so a text prompt cannot be encoded: save its tokenizer "
                           "(tokenizer.json or tokenizer_config.json) into the model's directory")
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise OptTreeError("--chat needs a tokenizer with a chat template, and this one has none")
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)
    else:
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    return torch.tensor(list(ids), dtype=torch.long)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("opttree-lab", "torch", "transformers", "numpy", "pandas", "pyarrow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass(frozen=True)
class RunInfo:
    """What a log's meta.json says about the run that produced it."""

    target: str
    draft: str
    policy: str
    policy_config: dict
    decode_config: dict
    prompt: str | None
    chat: bool
    seed: int
    device: str
    dtype: str

    def to_meta(self, prompt_ids: list[int], result: DecodeResult, tokenizer) -> dict:
        text = tokenizer.decode(result.token_ids, skip_special_tokens=True) if tokenizer is not None else None
        return {**asdict(self), "prompt_ids": prompt_ids, "token_ids": result.token_ids, "text": text,
                "steps": result.steps, "mal": result.mal, "tokens_per_s": result.tokens_per_s,
                "seconds": result.seconds, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "versions": package_versions()}


def decode_prompt(target: LoadedModel, drafter: Drafter, policy: TreePolicy, prompt_ids: torch.Tensor,
                  config: DecodeConfig, info: RunInfo, log_path=None, on_step=None,
                  log: TreeLog | None = None) -> DecodeResult:
    """Decode one prompt into a TreeLog (``log``, or a new one); when ``log_path`` is given, write the
    log there (atomically). ``on_step`` gets every step's ``StepRecord``."""
    torch.manual_seed(info.seed)
    device = target.model.get_input_embeddings().weight.device
    check_tree_memory(policy.max_nodes, config.max_new_tokens, device, model=target.model, prompt_len=len(prompt_ids))
    if log is None:
        log = TreeLog(max_steps=config.max_new_tokens, max_nodes=policy.max_nodes + 1, device=device)
    result = generate(target.model, drafter, policy, prompt_ids, config, log=log, on_step=on_step)
    log.meta.update(info.to_meta(prompt_ids.tolist(), result, target.tokenizer), draft_vocab=draft_vocab_size(drafter))
    if log_path is not None:
        log.save(log_path, tokenizer=target.tokenizer)
    return result
