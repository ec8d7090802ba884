"""Trained drafts stored as fp16 safetensors of their own parameters plus a JSON manifest.

A manifest ``NAME.json`` beside ``NAME.safetensors`` records the draft's kind ("eagle" or
"draft-lm"), its architecture config, the target it was trained for (name and a config
signature), the file's sha256 and the training card. The target's embeddings and LM head
are borrowed at load time, so they are not stored.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import LlamaConfig

from .atomic import save_tensors, write_atomic
from .drafters.draft_lm import DraftLMDrafter, build_draft_lm
from .draft_vocab import DraftVocab, load_counts
from .drafters.eagle import EagleDrafter, EagleHead
from .eagle_files import check_finite
from .errors import OptTreeError, json_object
from .models import LoadedModel, file_sha256
from .skinny import use_skinny_matmul, uses_skinny_matmul

WEIGHTS_DIR = Path(__file__).parent / "weights"
SIGNATURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "vocab_size")


def target_signature(config) -> dict:
    return {k: getattr(config, k, None) for k in SIGNATURE_KEYS}


def shipped_names(directory: Path = WEIGHTS_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []


def save_draft(path: Path, kind: str, own_state: dict[str, torch.Tensor], config: LlamaConfig, target_name: str,
               target_config, card: dict, token_counts: Path | None = None, draft_vocab: int = 0) -> Path:
    """Write ``path.safetensors`` (fp16) and ``path.json``; returns the manifest path.

    ``token_counts`` (a ``draft_vocab.save_counts`` file) is copied beside them, and ``draft_vocab``
    (0: the full vocabulary) becomes the draft vocabulary size the draft loads with by default.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    weights, manifest = path.with_suffix(".safetensors"), path.with_suffix(".json")
    tensors = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in own_state.items()}
    save_tensors(tensors, weights, metadata={"kind": kind, "target": target_name})
    record = {"kind": kind, "config": config.to_dict(), "target": target_name,
              "target_signature": target_signature(target_config), "sha256": file_sha256(weights), "card": card}
    if token_counts is not None:
        counts_file = path.with_name(f"{path.name}.token-counts.safetensors")
        shutil.copyfile(token_counts, counts_file)
        record.update(token_counts=counts_file.name, draft_vocab=draft_vocab)
    return write_atomic(manifest, lambda tmp: tmp.write_text(json.dumps(record, indent=2, default=str)))


def resolve_manifest(spec: str | os.PathLike) -> Path | None:
    """The manifest for a shipped name, a manifest/weights path, or None when ``spec`` is neither."""
    if isinstance(spec, str) and spec in shipped_names():
        return WEIGHTS_DIR / f"{spec}.json"
    path = Path(spec)
    if path.suffix in (".json", ".safetensors") and path.with_suffix(".json").is_file():
        return path.with_suffix(".json")
    return None


MANIFEST_KEYS = {"kind": str, "config": dict, "target": str, "target_signature": dict, "sha256": str}
OPTIONAL_MANIFEST_KEYS = {"draft_vocab": int, "token_counts": str, "card": dict}


def read_manifest(manifest: Path) -> dict:
    """A draft manifest's record; unreadable, not a JSON object, or a key missing or of the wrong
    type is a one-line OptTreeError naming the file and the key."""
    try:
        text = manifest.read_text(encoding="utf-8")
    except (OSError, ValueError) as e:  # ValueError: not UTF-8
        raise OptTreeError(f"draft manifest {manifest} is not readable: {e}") from e
    record = json_object(text, f"draft manifest {manifest}")
    for key, kind in MANIFEST_KEYS.items():
        if not isinstance(record.get(key), kind):
            problem = "lacks the key" if key not in record else f"has a {type(record[key]).__name__} under"
            raise OptTreeError(f"draft manifest {manifest} {problem} '{key}' (a {kind.__name__})")
    for key, kind in OPTIONAL_MANIFEST_KEYS.items():
        if key in record and not isinstance(record[key], kind):
            raise OptTreeError(f"draft manifest {manifest} has a {type(record[key]).__name__} under '{key}' "
                               f"(a {kind.__name__})")
    if "vocab_size" not in record["target_signature"]:
        raise OptTreeError(f"draft manifest {manifest} lacks the key 'target_signature.vocab_size'")
    return record


def load_draft(manifest: Path, target: LoadedModel, name: str | None = None, draft_vocab: int | None = None):
    """A drafter from a manifest, checked against its checksum and the target it was trained for.

    ``draft_vocab``: how many of the most frequent tokens the drafter may propose (``draft_vocab.py``);
    0 means the full vocabulary, ``None`` the manifest's default.
    """
    record = read_manifest(manifest)
    name = name or manifest.stem
    weights = manifest.with_suffix(".safetensors")
    if not weights.is_file():
        raise OptTreeError(f"draft '{name}': weights file {weights} is missing")
    if file_sha256(weights) != record["sha256"]:
        raise OptTreeError(f"draft '{name}': {weights.name} does not match its recorded sha256 (corrupt or replaced)")
    expected, actual = record["target_signature"], target_signature(target.model.config)
    if expected != actual:
        diff = ", ".join(f"{k} {expected[k]} vs {actual[k]}" for k in expected if expected[k] != actual.get(k))
        raise OptTreeError(f"draft '{name}' was trained for target '{record['target']}', not '{target.name}': {diff}")
    config = LlamaConfig.from_dict(record["config"])
    config._attn_implementation = "sdpa"
    state = check_finite(load_file(str(weights)), weights)
    model = target.model
    vocab = _draft_vocab(manifest, record, name, draft_vocab, expected["vocab_size"])
    if record["kind"] == "eagle":
        head = EagleHead(config).to(device=model.device, dtype=model.dtype)
        _load_own(head, state, name)
        _like_target(head, model)
        return EagleDrafter(head, model, name=name, vocab=vocab)
    if record["kind"] == "draft-lm":
        draft = build_draft_lm(model, config, init_from_target=False).eval()
        _load_own(draft, state, name)
        _like_target(draft, model)
        return DraftLMDrafter(draft, name=name, vocab=vocab)
    raise OptTreeError(f"draft '{name}': unknown kind {record['kind']!r} in {manifest}")


def _draft_vocab(manifest: Path, record: dict, name: str, size: int | None, vocab_size: int) -> DraftVocab | None:
    size = record.get("draft_vocab", 0) if size is None else size
    if size < 0:
        raise OptTreeError(f"draft vocabulary size must be 0 (full vocabulary) or positive, got {size}")
    if size == 0 or size >= vocab_size:
        return None
    if "token_counts" not in record:
        raise OptTreeError(f"draft '{name}' has no token counts, so it cannot draft from the {size} most frequent "
                           "tokens: use draft vocabulary 0 (the full vocabulary)")
    counts, _ = load_counts(manifest.parent / record["token_counts"])
    if counts.numel() != vocab_size:
        raise OptTreeError(f"draft '{name}': token counts cover {counts.numel()} tokens, the target has {vocab_size}")
    return DraftVocab.most_frequent(counts, size)


def _like_target(draft: torch.nn.Module, target_model: torch.nn.Module) -> None:
    """The draft's linear layers take the target's kernels (``skinny.py``), so both sides of a comparison match."""
    use_skinny_matmul(draft, on=uses_skinny_matmul(target_model))


def _load_own(module: torch.nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    dtype = next(module.parameters()).dtype
    missing, unexpected = module.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    own_missing = [k for k in missing if not k.startswith(("decoder.embed_tokens", "model.embed_tokens", "lm_head"))]
    if own_missing or unexpected:
        raise OptTreeError(f"draft '{name}': weights do not fit the architecture "
                           f"(missing {own_missing[:3]}, unexpected {unexpected[:3]})")
    module.requires_grad_(False)
