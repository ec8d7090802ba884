"""Every drafter by name or by the form of its spec, and the one way to load one
(``load_drafter``; the CLI, ``Session``, the bench harness and the explorer all go through it).

Drafters are found in two tables, beside the policy registry (``policies/registry.py``):

    NAMED     an exact name → a factory: ``self`` (the target drafts for itself), ``ngram``
    LOADERS   tried in order on any other spec; the first that recognises it loads it:
              a trained draft (shipped ``eagle-smollm2`` / ``tiny-smollm2``, or a ``.json`` /
              ``.safetensors`` written by ``opttree_core.train``), a published EAGLE-1/2 or EAGLE-3
              head (a directory with config.json and weights, or a hub id holding one), and last
              any model ``load_model`` takes (an independent draft LM with the target's tokenizer;
              "NAME:int8" / "NAME:int4" loads it with int8 / int4 weight-only layers, ``weight_only.py``;
              "NAME:layersK" keeps only its first K decoder layers (a weaker, cheaper draft); "NAME:vocabK"
              or "NAME:int8:vocabK" drafts from the K tokens an embedded model's shipped counts rank first,
              ``draft_vocab.py``; in that order: "NAME:int4:layers12:vocab32768").

A new drafter kind is one factory and one line in ``NAMED`` (or a loader in ``LOADERS``).
This module is imported on demand (not by ``drafters/__init__``): it reaches up to the loaders
of shipped drafts and published heads, which themselves build drafters.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..eagle_checkpoints import load_eagle_checkpoint
from ..eagle_files import eagle_directory
from ..draft_vocab import DraftVocab, load_counts
from ..embedded import EMBEDDED
from ..errors import OptTreeError
from ..models import LoadedModel, check_same_tokenizer, load_model
from ..shipped import WEIGHTS_DIR, load_draft, resolve_manifest, shipped_names
from ..weight_only import WEIGHT_FORMATS
from .base import Drafter
from .draft_lm import DraftLMDrafter, self_drafter
from .ngram import NGramDrafter

VOCAB_SUFFIX = "vocab"  # "NAME:vocabK": a draft model drafting from a vocabulary of K tokens
LAYERS_SUFFIX = "layers"  # "NAME:layersK": a draft model cut to its first K decoder layers
Factory = Callable[[LoadedModel], Drafter]
Loader = Callable[[str, LoadedModel, dict], "Drafter | None"]  # None: not this loader's kind of spec


def _ngram(target: LoadedModel) -> Drafter:
    return NGramDrafter(target.model.get_output_embeddings().weight.shape[0], device=target.model.device)


NAMED: dict[str, Factory] = {
    "self": lambda target: self_drafter(target.model),  # the greedy oracle: every greedy draft is accepted
    "ngram": _ngram,  # training-free prompt lookup with real distributions
}


def _refuse_draft_vocab(spec: str, draft_vocab: int | None) -> None:
    if draft_vocab:
        raise OptTreeError(f"a draft vocabulary needs token counts (a trained draft's, or an embedded draft model's), "
                           f"and '{spec}' has none")


def _trained(spec: str, target: LoadedModel, options: dict) -> Drafter | None:
    """A shipped or trained draft (its manifest ``.json``), drafting from ``draft_vocab`` tokens when given."""
    manifest = resolve_manifest(spec)
    if manifest is None and spec.endswith((".json", ".safetensors")):
        raise OptTreeError(f"draft '{spec}': no such trained draft (its manifest "
                           f"{Path(spec).with_suffix('.json')} is not there)")
    if manifest is None:
        return None
    return load_draft(manifest, target, name=spec, draft_vocab=options.get("draft_vocab"))


def _published_head(spec: str, target: LoadedModel, options: dict) -> Drafter | None:
    eagle = eagle_directory(spec)  # a local directory or a hub repo holding a published EAGLE head
    if eagle is None:
        return None
    _refuse_draft_vocab(spec, options.get("draft_vocab"))
    return load_eagle_checkpoint(eagle, target, name=spec)


def weight_suffix(spec: str) -> tuple[str, str | None]:
    """A draft model's spec and its weight format: "qwen2.5-coder-0.5b:int8" → ("qwen2.5-coder-0.5b", "int8")."""
    base, _, suffix = spec.rpartition(":")
    return (base, suffix) if base and suffix in WEIGHT_FORMATS else (spec, None)


def _count_suffix(spec: str, word: str) -> tuple[str, int | None]:
    base, _, suffix = spec.rpartition(":")
    size = suffix.removeprefix(word)
    return (base, int(size)) if base and suffix.startswith(word) and size.isdigit() else (spec, None)


def vocab_suffix(spec: str) -> tuple[str, int | None]:
    """A draft model's spec and its draft vocabulary: "qwen2.5-coder-0.5b:int8:vocab32768" →
    ("qwen2.5-coder-0.5b:int8", 32768)."""
    return _count_suffix(spec, VOCAB_SUFFIX)


def layers_suffix(spec: str) -> tuple[str, int | None]:
    """A draft model's spec and how many decoder layers it keeps: "qwen2.5-coder-0.5b:int4:layers12" →
    ("qwen2.5-coder-0.5b:int4", 12)."""
    return _count_suffix(spec, LAYERS_SUFFIX)


def keep_first_layers(model, layers: int, spec: str) -> None:
    """Cut a decoder-only transformers model to its first ``layers`` decoder layers, in place (its
    final norm and LM head stay): the same draft, weaker and cheaper. Out of range: one line."""
    decoder = model.get_decoder()
    total = len(decoder.layers)
    if not 0 < layers <= total:
        raise OptTreeError(f"draft '{spec}': it has {total} decoder layers, so ':{LAYERS_SUFFIX}K' takes K in 1..{total}, "
                           f"not {layers}")
    decoder.layers = type(decoder.layers)(list(decoder.layers)[:layers])
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = list(model.config.layer_types)[:layers]


def embedded_draft_vocab(name: str, size: int, vocab_size: int) -> DraftVocab | None:
    """The ``size`` tokens an embedded model's shipped counts rank first (None: ``size`` 0, the full
    vocabulary); one line for a model that ships no counts or a size out of range."""
    if size == 0:
        return None
    model = EMBEDDED.get(name)
    if model is None or model.token_counts is None:
        having = ", ".join(n for n, m in EMBEDDED.items() if m.token_counts)
        raise OptTreeError(f"a draft vocabulary ranks tokens by counts, and draft '{name}' ships none "
                           f"(embedded draft models that do: {having}; or a trained draft)")
    if not 0 < size < vocab_size:
        raise OptTreeError(f"draft vocabulary size {size} is outside 1..{vocab_size - 1} (0: the full vocabulary)")
    counts, _ = load_counts(WEIGHTS_DIR / model.token_counts)
    if counts.numel() != vocab_size:
        raise OptTreeError(f"draft '{name}': its token counts cover {counts.numel()} tokens, the model has {vocab_size}")
    return DraftVocab.most_frequent(counts, size)


def _draft_model(spec: str, target: LoadedModel, options: dict) -> Drafter:
    spec_base, size = vocab_suffix(spec)
    if size is not None and options.get("draft_vocab") not in (None, size):
        raise OptTreeError(f"draft '{spec}' names its vocabulary size and draft_vocab asks for "
                           f"{options['draft_vocab']}: give one")
    spec_base, layers = layers_suffix(spec_base)
    base, weights = weight_suffix(spec_base)
    try:
        # a draft needs no exactness: stock kernels (invariant=False), or int8/int4 weights when asked for
        draft = load_model(base, **{"invariant": False, "weights": weights, **options.get("load_options", {})})
    except OptTreeError as e:
        if not str(e).startswith(f"unknown model '{base}'"):
            raise
        raise OptTreeError(f"unknown draft '{spec}': expected {', '.join(drafter_kinds())}") from e
    check_same_tokenizer(target, draft)
    if layers is not None:
        keep_first_layers(draft.model, layers, spec)
    size = options.get("draft_vocab") if size is None else size
    vocab = embedded_draft_vocab(base, size, draft.model.config.vocab_size) if size else None
    return DraftLMDrafter(draft.model, name=spec, vocab=vocab)


def drafter_kinds() -> list[str]:
    """What a draft spec may be, for messages: the named drafters, the shipped ones, and the other kinds."""
    return [*NAMED, *shipped_names(), "a trained draft's .json", "a published EAGLE head (a directory or hub id)",
            "a draft model on the target's tokenizer (an embedded model, a directory or hub id; "
            f"':{'/'.join(WEIGHT_FORMATS)}' after it for weight-only {'/'.join(WEIGHT_FORMATS)} on a CPU, "
            f"':{LAYERS_SUFFIX}K' to keep its first K decoder layers, "
            f"':{VOCAB_SUFFIX}K' last to draft from the K tokens its counts rank first)"]


LOADERS: tuple[tuple[str, Loader], ...] = (("trained draft", _trained), ("published EAGLE head", _published_head),
                                           ("draft model", _draft_model))


def load_drafter(spec: str, target: LoadedModel, draft_vocab: int | None = None, **load_options) -> Drafter:
    """A drafter for ``target`` by name (``NAMED``) or spec (``LOADERS``, in order).

    ``draft_vocab`` (trained drafts, and embedded draft models with counts): propose only the K most
    frequent tokens (0: all; None: the draft's default, see ``draft_vocab.py``; a draft model's is all). ``load_options`` (``device``, ``dtype``) go to
    ``load_model`` for a draft model."""
    if not isinstance(spec, (str, Path)):
        raise OptTreeError(f"a draft is named by a string (a name, path or hub id), not {type(spec).__name__}")
    if not isinstance(target, LoadedModel):
        raise OptTreeError(f"load_drafter needs the target as a LoadedModel (from load_model), "
                           f"not {type(target).__name__}")
    spec, options = str(spec), {"draft_vocab": draft_vocab, "load_options": load_options}
    if spec in NAMED:
        _refuse_draft_vocab(spec, draft_vocab)
        return NAMED[spec](target)
    for _, loader in LOADERS:
        drafter = loader(spec, target, options)
        if drafter is not None:
            return drafter
    raise AssertionError("the last loader, a draft model, takes any spec")
