"""What every recorded run shares: checking and encoding a prompt, and ``RunInfo``, what a
log's meta.json says about the run (made by ``session.Session.run`` alone). The one entry point
is ``session.Session``; drafters are loaded by ``drafters.registry.load_drafter``."""
from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from importlib import metadata

import torch

from .decoding import DecodeResult
from .errors import OptTreeError


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
