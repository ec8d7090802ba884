"""Where a trained draft goes: the final weights, and one checkpoint per epoch of the learning curve.

``eagle`` and ``draft-lm`` drafts are fp16 safetensors plus a manifest (``shipped.save_draft``); an
``eagle3`` head is an EAGLE-3 checkpoint directory (``eagle_export.export_head``: config.json and
model.safetensors, d2t/t2d over its draft vocabulary) that ``eagle_checkpoints.py``, SGLang and vLLM
load. The per-epoch checkpoints (``epochs/epoch-N``) are drafts of graded strength; the EAGLE-3 ones
leave out the target's embedding table, as EAGLE-3's releases do (the loaders take the target's).
Every file is loaded back before the call returns.
"""
from __future__ import annotations

import json
from pathlib import Path

from ...eagle_checkpoints import load_eagle_checkpoint
from ...eagle_export import export_head
from ...models import LoadedModel
from ...shipped import load_draft, save_draft


def drafter(recipe, target_model):
    """A drafter over ``recipe.model`` as it is now (eval mode), drafting as its saved form will."""
    from ...drafters import DraftLMDrafter
    from ...drafters.eagle import EagleDrafter

    recipe.model.eval()
    if recipe.kind == "eagle3":
        return recipe.drafter(target_model)
    return EagleDrafter(recipe.model, target_model) if recipe.kind == "eagle" else DraftLMDrafter(recipe.model)


def _export_replacing(recipe, target: LoadedModel, path: Path, embeddings: bool) -> Path:
    """``path`` becomes a fresh EAGLE-3 checkpoint of the head; an older one there (a rerun) is replaced only
    once the new one is complete (``export_head(replace=True)``: ``atomic.replace_dir``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    export_head(drafter(recipe, target.model), target, path, embeddings=embeddings, replace=True)
    load_eagle_checkpoint(path, target)  # it loads back and passes the loader's checks
    return path


def save_final(recipe, target: LoadedModel, out: Path, name: str, card: dict, counts: Path, draft_vocab: int) -> Path:
    """The trained draft under ``out``; returns the manifest (eagle, draft-lm) or checkpoint directory (eagle3)."""
    if recipe.kind == "eagle3":
        path = _export_replacing(recipe, target, out / name, embeddings=True)
        (out / "card.json").write_text(json.dumps(card, indent=1, default=str))
        return path
    manifest = save_draft(out / name, recipe.kind, recipe.own_state(), recipe.config, card["target"], target.model.config,
                          card, token_counts=counts, draft_vocab=draft_vocab)
    load_draft(manifest, target)  # the saved files load back and pass their own checks
    return manifest


def save_epoch(recipe, target: LoadedModel, out: Path, name: str, epoch: int, card: dict, counts: Path,
               draft_vocab: int) -> str:
    """The draft after ``epoch`` epochs in ``out/epochs/epoch-N``; returns that path relative to ``out``."""
    where = Path("epochs") / f"epoch-{epoch}"
    if recipe.kind == "eagle3":
        _export_replacing(recipe, target, out / where, embeddings=False)
    else:
        save_draft(out / where / name, recipe.kind, recipe.own_state(), recipe.config, card["target"],
                   target.model.config, card, token_counts=counts, draft_vocab=draft_vocab)
    recipe.model.train()
    return str(where)
