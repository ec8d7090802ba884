"""Load target/draft models: the embedded GGUF models (``embedded.py``), local dirs, hub ids, tiny random models."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedTokenizerFast

from opttree_core.errors import OptTreeError
from opttree_core.invariant import use_invariant_kernels
from opttree_core.skinny import use_skinny_matmul
from opttree_core.weight_only import WEIGHT_FORMATS, quantize_linears

SMOLLM2 = "smollm2-135m"
TINY_RANDOM = "tiny-random"
EMBEDDED_NAMES = ("smollm2-135m", "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")  # embedded.EMBEDDED, loaded lazily
AUTO = "auto"  # an embedded model's fastest dtype on this device (``embedded.preferred_dtype``), else float32
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_ATTENTION = ("sdpa", "eager")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_LOAD_ERRORS = (OSError, ValueError, SafetensorError)
Tok = transformers.PreTrainedTokenizerBase


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode with grads off, its tokenizer (or None) and the spec it came from."""

    model: transformers.PreTrainedModel
    tokenizer: Tok | None
    name: str


@dataclass(frozen=True)
class _Options:
    device: torch.device
    dtype: torch.dtype | None  # None: "auto" (``resolved``)
    device_map: str | dict | None
    attn_implementation: str
    skinny_matmul: bool = True
    invariant: bool | None = None  # None: on for bf16/fp16 on a CPU (``_wants_invariant``)
    weights: str | None = None  # "int8" or "int4": ``weight_only.quantize_linears``


def load_model(
    spec: str | os.PathLike | transformers.PretrainedConfig,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = AUTO,
    device_map: str | dict | None = None,
    attn_implementation: str = "sdpa",
    skinny_matmul: bool = True,
    invariant: bool | None = None,
    weights: str | None = None,
) -> LoadedModel:
    """Load `spec`: an embedded model (``embedded.EMBEDDED``: "smollm2-135m", "qwen2.5-coder-1.5b",
    "qwen2.5-coder-0.5b"), "tiny-random", a config, a local HF directory or a hub id.

    `dtype` "auto": an embedded model's fastest dtype on the device (``embedded.preferred_dtype``),
    float32 for everything else.
    `device_map` (e.g. "auto") is passed to `from_pretrained` and replaces `device`.
    `skinny_matmul` gives a float32 CPU model's linear layers the faster few-row kernel of `skinny.py`.
    `invariant` gives it the row-count-invariant kernels of `invariant.py` instead, so that a tree's
    logits equal sequential decoding's bit for bit (None: on for bfloat16 and float16 on a CPU, where
    rounding that depends on the row count flips argmaxes; off for float32, where it practically never
    does, and on a GPU, whose kernels these do not cover yet). Drafts need no exactness: the drafter
    registry loads them with ``invariant=False``.
    `weights` "int8": int8 weight-only linear layers (``weight_only.py``; a CPU draft model, never a
    target: its tokens would no longer be the model's).
    """
    opts = _options(device, dtype, device_map, attn_implementation, skinny_matmul, invariant, weights)
    if isinstance(spec, str) and spec in EMBEDDED_NAMES:
        from .embedded import load_embedded  # the GGUF packages, assembly and conversion

        return load_embedded(spec, _embedded_options(spec, opts))
    if opts.dtype is None:  # "auto" is float32 for every other model
        opts = dataclasses.replace(opts, dtype=torch.float32)
    if isinstance(spec, transformers.PretrainedConfig):
        return _random_model(spec, f"random-{spec.model_type}", opts)
    if spec == TINY_RANDOM:
        return _random_model(tiny_llama_config(), TINY_RANDOM, opts)
    name = os.path.expanduser(os.fspath(spec))  # "~/models/x" from Python or a quoted shell word
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise OptTreeError(f"model directory '{name}' has no config.json")
        return _load_pretrained(name, opts, local=True)
    if os.path.lexists(name):
        raise OptTreeError(f"model '{name}' is a file, not a model directory: give the directory that holds its "
                           "config.json and weights")
    if _meant_as_directory(spec):
        raise OptTreeError(f"unknown model '{name}': no such directory (a spec is a local path when it starts with "
                           "'.', '/' or '~', is not of the hub's 'org/name' form, or its 'org' is a directory here)")
    if is_hub_id(spec):
        _hub_preflight(spec)
        return _load_pretrained(name, opts, local=False)
    raise OptTreeError(f"unknown model '{name}': expected one of {', '.join(EMBEDDED_NAMES)}, {TINY_RANDOM}, "
                       f"a local directory or a hub id")


def is_hub_id(spec) -> bool:
    """Whether ``spec`` reads as a Hugging Face hub id ("owner/name")."""
    return isinstance(spec, str) and _HUB_ID.match(spec) is not None


def _hub_preflight(repo_id: str) -> None:
    """For a hub id not in the local Hugging Face cache: one request for its config.json, without
    the retries ``from_pretrained`` makes (about 25 s and ten lines of warnings when offline), so an
    unreachable hub or a missing model is one line at once."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    if isinstance(huggingface_hub.try_to_load_from_cache(repo_id, "config.json"), str):
        return
    where = f"cannot load model '{repo_id}'"
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise OptTreeError(f"{where}: offline mode (HF_HUB_OFFLINE) and it is not in the local Hugging Face cache")
    try:
        huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo_id, "config.json"), retry_on_errors=False)
    except RepositoryNotFoundError as e:
        raise OptTreeError(f"{where}: the Hugging Face hub has no such model, or it is gated or private "
                           "(log in with `hf auth login`)") from e
    except EntryNotFoundError as e:
        raise OptTreeError(f"{where}: the repository has no config.json, so it is not a transformers model") from e
    except Exception as e:  # the hub client raises its HTTP library's own transport errors
        raise OptTreeError(f"{where}: the Hugging Face hub cannot be reached ({type(e).__name__}: {e}) and the model "
                           "is not in the local cache; check the network, or give a local directory") from e


def _meant_as_directory(spec) -> bool:
    """Whether a spec that names no directory was meant as one rather than as a hub id "org/name":
    a path object, a path from the root, home or ``.``, or "a/b" where the directory "a" exists here."""
    if not isinstance(spec, str):
        return True
    if spec.startswith(("/", "~", ".")) or not _HUB_ID.match(spec):
        return "/" in spec or os.sep in spec
    return Path(spec).parent.is_dir()


def tiny_llama_config(
    vocab_size: int = 128,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 512,
    **overrides: object,
) -> LlamaConfig:
    """A small Llama config for tests; token ids match `tiny_tokenizer` (bos 1, eos 2)."""
    params: dict[str, object] = dict(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, num_key_value_heads=num_key_value_heads,
        intermediate_size=intermediate_size, max_position_embeddings=max_position_embeddings,
        bos_token_id=1, eos_token_id=2,
    )
    return LlamaConfig(**(params | overrides))


def tiny_tokenizer(vocab_size: int = 128) -> PreTrainedTokenizerFast:
    """A deterministic whitespace WordLevel tokenizer: <unk>, <s>, </s>, then t3, t4, ..."""
    if vocab_size < 3:
        raise OptTreeError(f"tiny_tokenizer needs vocab_size >= 3, got {vocab_size}")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"t{i}": i for i in range(3, vocab_size)}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def check_same_tokenizer(target: LoadedModel, draft: LoadedModel) -> None:
    """Raise OptTreeError unless target and draft share vocab and special token ids."""
    if target.tokenizer is not None and draft.tokenizer is not None:
        problem = _tokenizer_difference(target.tokenizer, draft.tokenizer)
    else:
        missing = "target" if target.tokenizer is None else "draft"
        t_vocab, d_vocab = (m.model.config.get_text_config().vocab_size for m in (target, draft))
        problem = None
        if t_vocab != d_vocab:
            problem = f"config vocab_size {t_vocab} vs {d_vocab} ({missing} has no tokenizer)"
    if problem is not None:
        raise OptTreeError(f"target '{target.name}' and draft '{draft.name}' do not share a tokenizer: {problem}")


def cache_root() -> Path:
    """Where converted models are cached: $OPTTREE_CACHE or ~/.cache/opttree_lab."""
    root = os.environ.get("OPTTREE_CACHE") or Path.home() / ".cache" / "opttree_lab"
    return Path(root).expanduser()


def _options(device: str | torch.device, dtype: torch.dtype | str, device_map: str | dict | None,
             attn_implementation: str, skinny_matmul: bool = True, invariant: bool | None = None,
             weights: str | None = None) -> _Options:
    """Validate the load options; every problem is a one-line OptTreeError."""
    if attn_implementation not in _ATTENTION:
        raise OptTreeError(f"attn_implementation '{attn_implementation}' is not supported: the engine passes "
                           f"4D float masks, use one of {', '.join(_ATTENTION)}")
    if isinstance(dtype, str):
        if dtype not in _DTYPES and dtype != AUTO:
            raise OptTreeError(f"unknown dtype '{dtype}': expected one of {AUTO}, {', '.join(_DTYPES)}")
        dtype = _DTYPES.get(dtype)
    if dtype is not None and dtype not in _DTYPES.values():
        raise OptTreeError(f"unsupported dtype {dtype}: expected one of {', '.join(_DTYPES)}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise OptTreeError(f"bad device {device!r}: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptTreeError(f"device '{dev}' requested but CUDA is not available")
    if invariant not in (None, True, False):
        raise OptTreeError(f"invariant must be True, False or None (auto), got {invariant!r}")
    if weights is not None:
        if weights not in WEIGHT_FORMATS:
            raise OptTreeError(f"unknown weight format {weights!r}: expected one of {', '.join(WEIGHT_FORMATS)}")
        if invariant or dev.type != "cpu":
            raise OptTreeError(f"{weights} weights are for a CPU draft model, without the invariant kernels")
    return _Options(dev, dtype, device_map, attn_implementation, skinny_matmul, invariant, weights)


def _embedded_options(name: str, opts: _Options) -> _Options:
    """``opts`` with "auto" resolved to the embedded model's preferred dtype on the device."""
    if opts.dtype is not None:
        return opts
    from .embedded import EMBEDDED, preferred_dtype

    return dataclasses.replace(opts, dtype=preferred_dtype(EMBEDDED[name], opts.device))


def _wants_invariant(model: transformers.PreTrainedModel, opts: _Options) -> bool:
    if opts.invariant is not None:
        return opts.invariant
    return model.dtype in (torch.bfloat16, torch.float16) and model.device.type == "cpu"


def _finish(model: transformers.PreTrainedModel, tokenizer: Tok | None, name: str, opts: _Options) -> LoadedModel:
    model.eval()
    model.requires_grad_(False)
    if opts.weights is not None:
        quantize_linears(model, opts.weights)
    elif _wants_invariant(model, opts):
        use_invariant_kernels(model)
    elif opts.skinny_matmul and model.dtype == torch.float32:  # bf16's own kernels beat it (README, "A real pair")
        use_skinny_matmul(model)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name)


def _random_model(config: transformers.PretrainedConfig, name: str, opts: _Options) -> LoadedModel:
    """A randomly initialised model, seeded with 0 without touching the caller's RNG."""
    if opts.device_map is not None:
        raise OptTreeError(f"device_map applies to pretrained models only, not to '{name}'")
    config = copy.deepcopy(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=opts.dtype,
                                                     attn_implementation=opts.attn_implementation)
        except ValueError as e:
            raise OptTreeError(f"cannot build a model from config '{name}': {e}") from e
    model.to(opts.device)
    vocab = config.get_text_config().vocab_size
    return _finish(model, tiny_tokenizer(vocab) if vocab >= 8 else None, name, opts)


def _load_pretrained(source: str, opts: _Options, *, local: bool, name: str | None = None) -> LoadedModel:
    """`from_pretrained` for a local directory or a hub id; a checkpoint with holes is an error."""
    name = name or source
    has_tokenizer = not local or any((Path(source) / f).is_file() for f in _TOKENIZER_FILES)
    try:
        device_map = opts.device_map if opts.device_map is not None else opts.device
        model, info = AutoModelForCausalLM.from_pretrained(source, dtype=opts.dtype, device_map=device_map,
                                                           attn_implementation=opts.attn_implementation,
                                                           output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(source) if has_tokenizer else None
    except _LOAD_ERRORS as e:
        reason = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise OptTreeError(f"cannot load model '{name}': {reason}") from e
    holes = sorted(info["missing_keys"]) + sorted(str(k[0]) for k in info["mismatched_keys"])
    if holes:
        raise OptTreeError(f"model '{name}' checkpoint lacks or mismatches {len(holes)} tensors, e.g. {holes[0]}")
    return _finish(model, tokenizer, name, opts)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _tokenizer_difference(a: Tok, b: Tok) -> str | None:
    """What differs between two tokenizers (vocab, then eos/bos/pad ids), or None."""
    va, vb = a.get_vocab(), b.get_vocab()
    if len(va) != len(vb):
        return f"vocab {len(va)} vs {len(vb)} tokens"
    diff = sorted((i, tok) for tok, i in va.items() if vb.get(tok) != i)
    if diff:
        return f"vocab differs in {len(diff)} of {len(va)} tokens, e.g. {diff[0][1]!r}"
    for attr in ("eos_token_id", "bos_token_id", "pad_token_id"):
        if getattr(a, attr) != getattr(b, attr):
            return f"{attr} {getattr(a, attr)} vs {getattr(b, attr)}"
    return None
