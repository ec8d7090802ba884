"""The files of a published EAGLE head: read from a directory (or fetched from the Hugging Face hub),
with the layout told apart by its weight keys, never by the architecture string (docs/architecture.md,
trap 12). ``eagle_checkpoints.py`` checks and builds the head; ``eagle_export.py`` writes one.

A head is a directory with ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin`` (or a
``*.index.json`` naming shards), as SafeAILab/EAGLE's ``EaModel.from_pretrained`` (``eagle/model/
ea_model.py``) reads them: keys without a ``model.`` prefix.

    EAGLE-1/2   ``fc.weight`` and ``layers.N.*``      (cnets1.py ``Model``)
    EAGLE-3     ``fc.weight`` and ``midlayer.*``      (cnets.py ``Model``)

Anything with ``fc.weight`` that is neither is an unknown layout (one line naming the file and key);
a directory without ``fc.weight`` is not an EAGLE head at all (a draft LM, for ``load_model``).
"""
from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from .errors import OptTreeError, json_object

CONFIG = "config.json"
WEIGHT_NAMES = ("model.safetensors", "pytorch_model.bin")
INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
EAGLE1, EAGLE3 = "eagle", "eagle3"
_READ_ERRORS = (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError, SafetensorError)


def read_weight_map(index: Path) -> dict[str, Path]:
    """An index's ``weight_map`` (tensor name → shard file), checked: a JSON object whose
    ``weight_map`` maps names to file names inside the index's own directory; anything else (a list, a
    number for a path, a path that leaves the directory) is one line naming the index."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise OptTreeError(f"{index}: not a weights index with a 'weight_map': {type(e).__name__}: {e}") from e
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in weight_map.items()):
        raise OptTreeError(f"{index}: 'weight_map' must map tensor names to file names (a JSON object of strings)")
    root = index.parent.resolve()
    sources = {key: (index.parent / file) for key, file in weight_map.items()}
    outside = next((file for file, path in zip(weight_map.values(), sources.values())
                    if path.resolve().parent != root), None)
    if outside is not None:
        raise OptTreeError(f"{index}: names {outside!r}, a file outside the head's directory: refused")
    return sources


def _weight_sources(directory: Path) -> tuple[dict[str, Path], dict[str, torch.Tensor]]:
    """key → the file holding it (from an index's ``weight_map``, else from the one weights file), and the
    tensors already read on the way (a .bin has no key listing without reading it)."""
    for name in INDEX_NAMES:
        index = directory / name
        if index.is_file():
            return read_weight_map(index), {}
    path = directory / WEIGHT_NAMES[0]
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                return {key: path for key in f.keys()}, {}
        except _READ_ERRORS as e:
            raise OptTreeError(f"{path}: cannot read the weights: {type(e).__name__}: {e}") from e
    path = directory / WEIGHT_NAMES[1]
    if path.is_file():
        tensors = _read_file(path)
        return {key: path for key in tensors}, tensors
    return {}, {}


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return check_finite(load_file(str(path)), path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except _READ_ERRORS as e:
        raise OptTreeError(f"{path}: cannot read the weights: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OptTreeError(f"{path}: not a state dict of tensors")
    return check_finite(state, path)


def check_finite(state: dict[str, torch.Tensor], path) -> dict[str, torch.Tensor]:
    """``state`` when every floating-point tensor is finite; a NaN or inf (a head that would load and
    be silently useless) is one line naming the file and the tensor."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).sum())
            raise OptTreeError(f"{path}: tensor {key} holds {bad} NaN or infinite value(s): not a usable head")
    return state


def _read_config(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise OptTreeError(f"{path} is not readable: {e}") from e
    return json_object(text, path)


@dataclass(frozen=True)
class Checkpoint:
    """A head's directory: its config, which file holds each key, and (``tensors``) the weights."""

    directory: Path
    config: dict
    sources: dict[str, Path]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def config_file(self) -> Path:
        return self.directory / CONFIG

    def error(self, key: str, message: str, weights: bool = False) -> OptTreeError:
        """One line naming the file that holds ``key`` and the key: config.json for a config field, the
        (first) weights file for a weight key that is absent (``weights``)."""
        default = min(self.sources.values()) if weights and self.sources else self.config_file
        where = self.sources.get(key, default)
        return OptTreeError(f"{where}: '{key}' {message}")

    def value(self, key: str, default=None, kind=int):
        """A config field of type ``kind`` (``default`` when absent; absent without a default is an error)."""
        value = self.config.get(key, default)
        if value is None:
            raise self.error(key, "is missing from the config")
        if kind is bool:
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            raise self.error(key, f"must be a {kind.__name__}, got {value!r}")
        return value

    def layout(self) -> str | None:
        return layout_of(self)


def layout_of(checkpoint: Checkpoint) -> str | None:
    """EAGLE1, EAGLE3, or None when the weights have no top-level ``fc.weight`` (not an EAGLE head)."""
    keys = checkpoint.sources
    if "fc.weight" not in keys:
        return None
    if any(k.startswith("midlayer.") for k in keys):
        return EAGLE3
    if any(k.startswith("layers.") for k in keys) and "lm_head.weight" not in keys:
        return EAGLE1
    odd = next((k for k in sorted(keys) if k != "fc.weight"), "fc.weight")
    raise checkpoint.error(odd, "does not fit a known EAGLE layout: 'fc.weight' with 'layers.N.*' and no LM head "
                                "(EAGLE-1/2), or 'fc.weight' with 'midlayer.*' (EAGLE-3)")


def open_checkpoint(directory: str | os.PathLike) -> Checkpoint | None:
    """The checkpoint in ``directory`` (safetensors not read yet), or None when it has no config.json or
    no weights file."""
    directory = Path(directory)
    if not (directory / CONFIG).is_file():
        return None
    sources, tensors = _weight_sources(directory)
    if not sources:
        return None
    return Checkpoint(directory, _read_config(directory / CONFIG), sources, tensors)


def load_tensors(checkpoint: Checkpoint) -> Checkpoint:
    """The same checkpoint with every tensor read (each file once)."""
    if set(checkpoint.tensors) == set(checkpoint.sources):
        return checkpoint
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(set(checkpoint.sources.values())):
        if not path.is_file():
            raise OptTreeError(f"{path}: the weights file is missing (named by the index)")
        tensors.update(_read_file(path))
    missing = sorted(set(checkpoint.sources) - set(tensors))
    if missing:
        raise checkpoint.error(missing[0], "is named by the index but not stored in its file")
    return Checkpoint(checkpoint.directory, checkpoint.config, checkpoint.sources, tensors)


def eagle_directory(spec) -> Path | None:
    """A local directory holding an EAGLE head, or a hub repo holding one (fetched), else None."""
    from .models import is_hub_id

    if isinstance(spec, (str, os.PathLike)) and Path(spec).is_dir():
        checkpoint = open_checkpoint(spec)
        return Path(spec) if checkpoint is not None and checkpoint.layout() is not None else None
    if is_hub_id(spec):
        return fetch_hub_checkpoint(spec)
    return None


def fetch_hub_checkpoint(repo_id: str) -> Path | None:
    """Download a hub repo's config.json and weights (through ``huggingface_hub``, into its cache) when
    they hold an EAGLE head, and return the snapshot directory; None when the repo is something else.

    The weights are tried as ``from_pretrained`` would (an index, then safetensors, then a .bin), so a
    repo that turns out to be a plain draft LM has fetched nothing ``load_model`` does not read anyway."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        config = Path(hf_hub_download(repo_id, CONFIG))
        for name in (*INDEX_NAMES, *WEIGHT_NAMES):
            try:
                first = Path(hf_hub_download(repo_id, name))
            except EntryNotFoundError:
                continue
            if name in INDEX_NAMES:
                weight_map = read_weight_map(first)
                if "fc.weight" not in weight_map:
                    return None  # a sharded model, not a head: fetch no shards
                for shard in sorted({path.name for path in weight_map.values()}):
                    hf_hub_download(repo_id, shard)
            break
        else:
            return None
    except EntryNotFoundError:
        return None  # no config.json: not a model repo this loader knows
    except (OSError, ValueError) as e:
        reason = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise OptTreeError(f"cannot fetch '{repo_id}' from the Hugging Face hub: {reason}") from e
    checkpoint = open_checkpoint(config.parent)
    return config.parent if checkpoint is not None and checkpoint.layout() is not None else None
