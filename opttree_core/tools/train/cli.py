"""``python -m opttree_core.train {eagle,eagle3,draft-lm} --target smollm2-135m ...``

Self-distillation data (the target's own greedy answers; ``--mix spec-bench``: shaped like the
Spec-Bench categories, ``mix.py``) → cached features → training with resumable checkpoints →
fp16 weights + manifest (an EAGLE-3 checkpoint directory for ``eagle3``, ``eagle3.py``) + model card,
with held-out agreement and MAL after every epoch (the learning curve) and the draft of every epoch
kept in ``epochs/epoch-N`` (``save.py``).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import transformers

from ...draft_vocab import DEFAULT_DRAFT_VOCAB, DraftVocab, count_tokens, save_counts
from ...errors import OptTreeError, report_errors
from ...models import load_model
from ..cli import add_ray_arguments, ray_options
from ..datasets import DEFAULT_GSM8K
from .card import write_card
from .data import compute_features, self_distill
from .eagle3 import TTT_STEPS, Eagle3Recipe, check_feature_layers
from .evaluate import heldout_agreement, heldout_mal
from .loop import TrainConfig, planned_steps, train
from .mix import spec_bench_data
from .prompts import check_gsm8k, context_prompts, training_prompts
from .recipes import DraftLMRecipe, EagleRecipe
from .save import drafter, save_epoch, save_final


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m opttree_core train", description=__doc__.split("\n")[0])
    p.add_argument("kind", choices=["eagle", "eagle3", "draft-lm", "data"],
                   help="what to train; 'data' only builds the shared self-distillation cache")
    p.add_argument("--target", default="smollm2-135m")
    p.add_argument("--name", default=None, help="name of the trained draft (default: KIND-TARGET)")
    p.add_argument("--out", default=None, help="run directory (default: out/train/NAME)")
    p.add_argument("--data", default=None, help="directory for the shared self-distillation cache")
    p.add_argument("--gsm8k", default=str(DEFAULT_GSM8K))
    p.add_argument("--n-gsm8k", type=int, default=150, help="GSM8K prompts (-1: all)")
    p.add_argument("--n-humaneval", type=int, default=40, help="HumanEval prompts (-1: all)")
    p.add_argument("--n-own", type=int, default=150, help="prompts of our own styles (-1: all)")
    p.add_argument("--n-context", type=int, default=0,
                   help="second-stage prompts whose contexts are the target's own first-stage answers")
    p.add_argument("--mix", choices=["default", "spec-bench"], default="default",
                   help="spec-bench: prompts per Spec-Bench category (mix.py) instead of the --n-* counts")
    p.add_argument("--per-category", type=int, default=50, help="--mix spec-bench: prompts per category")
    p.add_argument("--max-new-tokens", type=int, default=96, help="length cap of the target's answers")
    p.add_argument("--gen-batch", type=int, default=16)
    p.add_argument("--feature-batch", type=int, default=8, help="sequences per forward pass when caching features")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--layers", type=int, default=None, help="decoder layers (eagle 1, draft-lm 2)")
    p.add_argument("--intermediate", type=int, default=1024, help="draft-lm MLP width")
    p.add_argument("--feature-layers", type=int, nargs="+", default=None,
                   help="eagle3: target layers whose inputs the head reads (default EAGLE-3's 2, L//2, L-3)")
    p.add_argument("--ttt-steps", type=int, default=TTT_STEPS, help="eagle3: steps of the training-time test")
    p.add_argument("--holdout", type=float, default=0.05, help="share of sequences held out")
    p.add_argument("--eval-prompts", type=int, default=6, help="held-out prompts decoded for MAL each epoch")
    p.add_argument("--eval-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (tests)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="wall-clock guard: stop cleanly after this many seconds of training, save, and record the cut")
    p.add_argument("--draft-vocab", type=int, default=DEFAULT_DRAFT_VOCAB,
                   help="tokens the draft may propose by default: the most frequent in the data (0: all)")
    p.add_argument("--no-progress", action="store_true")
    add_ray_arguments(p, "make the self-distillation answers and features on Ray workers, in shards")
    p.add_argument("--shard-batches", type=int, default=4, metavar="B",
                   help="--ray: batches per shard (--gen-batch answers, --feature-batch features); the driver "
                        "records each finished shard, so a rerun redoes none")
    return p


def _limit(n: int) -> int | None:
    return None if n < 0 else n


def _recipe(args, target, counts: torch.Tensor, layers):
    if args.kind == "eagle":
        return EagleRecipe(target.model, num_layers=args.layers or 1)
    if args.kind == "eagle3":
        size = args.draft_vocab if 0 < args.draft_vocab < counts.numel() else counts.numel()
        return Eagle3Recipe(target.model, DraftVocab.most_frequent(counts, size).ids, layers, args.ttt_steps)
    return DraftLMRecipe(target.model, num_layers=args.layers or 2, intermediate_size=args.intermediate)


def _data(args, target, data_dir: Path, layers=None, workers=None) -> tuple[list, list, list, dict, torch.Tensor]:
    """The self-distillation data (cached): prompts, the target's answers, their features (with ``layers``, EAGLE-3's:
    ``compute_features``), build times, token counts. ``workers`` (``--ray``): made by Ray workers in shards."""
    progress, clock, start = not args.no_progress, {}, time.time()
    if args.mix == "spec-bench":
        prompts, sequences = spec_bench_data(target, args.gsm8k, args.per_category, data_dir, args.max_new_tokens,
                                             args.gen_batch, args.seed, progress, workers)
    else:
        prompts = training_prompts(args.gsm8k, _limit(args.n_gsm8k), _limit(args.n_humaneval), _limit(args.n_own),
                                   args.seed)
        chosen_by = {k: getattr(args, k) for k in ("mix", "n_gsm8k", "n_humaneval", "n_own", "seed")}
        sequences = self_distill(target, prompts, data_dir / "sequences.jsonl", args.max_new_tokens, args.gen_batch,
                                 progress, chosen_by, workers)
    if args.n_context > 0 and args.mix == "default":
        texts = [(s.source, target.tokenizer.decode(s.ids[s.n_prompt:], skip_special_tokens=True)) for s in sequences]
        second = context_prompts(texts, args.n_context, args.seed)
        prompts += second
        sequences += self_distill(target, second, data_dir / "sequences_context.jsonl", args.max_new_tokens,
                                  args.gen_batch, progress, {**chosen_by, "n_context": args.n_context}, workers)
    clock["self_distillation_s"] = time.time() - start
    start = time.time()
    cache = "features.pt" if layers is None else f"features-layers-{'-'.join(map(str, layers))}.pt"
    features = compute_features(target, sequences, data_dir / cache, args.feature_batch, progress, layers, workers)
    clock["features_s"] = time.time() - start
    counts = count_tokens((s.ids for s in sequences), target.model.config.vocab_size)
    save_counts(data_dir / "token_counts.safetensors", counts, {"target": args.target, "sequences": len(sequences)})
    clock_file = data_dir / "wall_time.json"  # the data's build times, kept for the cards of later training calls
    if clock_file.is_file():
        clock.update(json.loads(clock_file.read_text()))
    else:
        clock_file.write_text(json.dumps(clock))
    return prompts, sequences, features, clock, counts


def _heldout_split(n: int, args) -> tuple[list[int], list[int]]:
    """(held-out, training) indices of the n sequences, shuffled with the run's seed; both non-empty."""
    order = list(range(n))
    random.Random(args.seed).shuffle(order)
    n_held = max(1, int(n * args.holdout))
    if n_held >= n:
        raise OptTreeError(f"--holdout {args.holdout:g} of {n} sequences leaves none to train on: "
                           "hold out less or build more data")
    return order[:n_held], order[n_held:]


_AT_LEAST = {"epochs": 1, "batch_size": 1, "gen_batch": 1, "feature_batch": 1, "max_new_tokens": 1, "eval_tokens": 1,
             "eval_prompts": 0, "intermediate": 1, "n_context": 0, "draft_vocab": 0, "n_gsm8k": -1, "n_humaneval": -1,
             "n_own": -1, "ttt_steps": 1, "per_category": 2, "shard_batches": 1}


def _check_args(args) -> None:
    """Every setting checked before the target loads or anything is written (one line each)."""
    for key, low in _AT_LEAST.items():
        if getattr(args, key) < low:
            raise OptTreeError(f"--{key.replace('_', '-')} must be >= {low}, got {getattr(args, key)}")
    for key in ("layers", "max_steps"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            raise OptTreeError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.kind == "eagle3" and args.layers not in (None, 1):
        raise OptTreeError(f"--layers {args.layers}: an EAGLE-3 head has one layer")
    if args.kind == "eagle3":
        check_feature_layers(args.feature_layers, None)  # the count now; the range once the target is loaded
    for flag in ("data", "out"):
        where = getattr(args, flag)
        if where is not None and os.path.lexists(where) and not Path(where).is_dir():
            raise OptTreeError(f"--{flag} {where} exists and is not a directory: give a directory (made if missing)")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise OptTreeError(f"--lr must be a finite number > 0, got {args.lr}")
    if not 0 < args.holdout < 1:
        raise OptTreeError(f"--holdout is the share of sequences held out, in (0, 1); got {args.holdout}")
    if args.max_seconds is not None and not (math.isfinite(args.max_seconds) and args.max_seconds > 0):
        raise OptTreeError(f"--max-seconds must be a finite number > 0, got {args.max_seconds}")
    if args.mix == "spec-bench" or args.n_gsm8k != 0:
        check_gsm8k(args.gsm8k)
    if args.name is not None and (not args.name.strip(". ") or Path(args.name).name != args.name):
        raise OptTreeError(f"--name {args.name!r} must be a plain file name (no '/', not '.' or '..')")


def safe_name(target: str) -> str:
    """A flat name for a target, usable as one path component: a local directory's own name, a hub
    id's ``org--model``, anything else with characters outside [A-Za-z0-9._-] replaced."""
    if Path(target).is_dir():
        target = Path(target).resolve().name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", target.replace("/", "--")).strip(".-")
    return name or "target"


def _check_target(target) -> None:
    """Self-distillation prompts go through the target's chat template: it needs one."""
    if target.tokenizer is None:
        raise OptTreeError(f"target '{target.name}' has no tokenizer: training needs one with a chat template")
    if not getattr(target.tokenizer, "chat_template", None):
        raise OptTreeError(f"target '{target.name}' has no chat template, and training formats every prompt with it: "
                           "use a chat (instruct) model, or add a chat_template to its tokenizer_config.json")


@contextlib.contextmanager
def _data_workers(args):
    """The Ray workers of --ray (connected here: a bad address is one line, before anything is written), or None."""
    options = ray_options(args)
    if options is None:
        yield None
        return
    from .ray_data import RayData  # Ray is imported only with --ray

    with RayData.connect(options, args.target, args.device, args.shard_batches) as workers:
        yield workers


def run(args) -> dict:
    _check_args(args)
    with _data_workers(args) as workers:
        return _run(args, workers)


def _run(args, workers) -> dict:
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls on GPUs that have them; CPU runs are unchanged
    name = args.name or f"{args.kind}-{safe_name(args.target)}"
    out = Path(args.out or f"out/train/{name}")
    mix = "" if args.mix == "default" else f"-{args.mix}"
    data_dir = Path(args.data or f"out/train-data/{safe_name(args.target)}{mix}")
    target = load_model(args.target, device="cpu" if workers is not None and args.kind == "data" else args.device)
    _check_target(target)  # with --ray and only data to make, this copy only tokenizes and counts
    layers = None
    if args.kind == "eagle3":
        layers = check_feature_layers(args.feature_layers, target.model.config.get_text_config().num_hidden_layers)
    prompts, sequences, features, clock, counts = _data(args, target, data_dir, layers, workers)
    if args.kind == "data":
        return {"name": "data", "steps": 0, "final_loss": None, "heldout": {}, "wall_time": clock}
    held, kept = _heldout_split(len(sequences), args)
    train_seqs, train_feats = [sequences[i] for i in kept], [features[i] for i in kept]
    held_seqs, held_feats = [sequences[i] for i in held], [features[i] for i in held]
    recipe = _recipe(args, target, counts, layers)
    out.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                         max_steps=args.max_steps, max_seconds=args.max_seconds)
    curve, counts_file = _resumed_curve(out), data_dir / "token_counts.safetensors"

    def measure(point):
        point.update(heldout_agreement(recipe, held_seqs, held_feats))
        if args.eval_prompts > 0:
            point["mal"] = heldout_mal(target.model, lambda: drafter(recipe, target.model), held_seqs[: args.eval_prompts],
                                       args.eval_tokens)
        if point["epoch"] > 0:  # the learning curve's drafts, of graded strength
            point["checkpoint"] = save_epoch(recipe, target, out, name, point["epoch"], {"target": args.target,
                                             "epoch": point["epoch"]}, counts_file, args.draft_vocab)
        curve.append(point)
        (out / "learning_curve.json").write_text(json.dumps(curve, indent=1))  # survives an interrupted run
        recipe.model.train()

    if not (out / "checkpoint.pt").is_file():
        curve.clear()
        measure({"epoch": 0, "tokens": 0, "step": 0})  # the draft before training (random head / copied layers)
    history = train(recipe, train_seqs, train_feats, config, out / "checkpoint.pt", not args.no_progress,
                    lambda epoch, h: measure({"epoch": epoch + 1, "tokens": h[-1]["tokens"], "step": h[-1]["step"]}))
    clock["train_s"] = history[-1]["seconds"] if history else 0.0  # summed over resumed calls
    planned = planned_steps(len(train_seqs), config)
    last_epoch_is_final = curve and history and curve[-1]["step"] == history[-1]["step"]
    heldout = ({k: curve[-1][k] for k in ("top1", "top4", "positions")} if last_epoch_is_final
               else heldout_agreement(recipe, held_seqs, held_feats))
    card = {"name": name, "kind": args.kind, "target": args.target, "command": " ".join(sys.argv),
            "data": _data_summary(prompts, sequences, kept, held), "train": asdict(config), "steps": len(history),
            "planned_steps": planned, **_cut_note(history, planned, config),
            "final_loss": history[-1]["loss"] if history else None, "learning_curve": curve, "wall_time": clock,
            "heldout": heldout, "device": args.device,
            **({"recipe": recipe.summary()} if hasattr(recipe, "summary") else {}),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__}}
    save_final(recipe, target, out, name, card, counts_file, args.draft_vocab)
    write_card(out / "MODEL_CARD.md", card)
    (out / "history.json").write_text(json.dumps(history))
    return card


def _resumed_curve(out: Path) -> list[dict]:
    """Learning-curve points already measured by an earlier call of a resumed run."""
    path = out / "learning_curve.json"
    return json.loads(path.read_text()) if (out / "checkpoint.pt").is_file() and path.is_file() else []


def _cut_note(history: list[dict], planned: int, config: TrainConfig) -> dict:
    """The card's record of a run stopped before the end of its schedule (empty when it finished)."""
    done = history[-1]["step"] if history else 0
    if done >= planned:
        return {}
    why = (f"--max-steps {config.max_steps}" if config.max_steps is not None and done >= config.max_steps
           else f"the --max-seconds {config.max_seconds:g} wall-clock guard")
    rerun = "rerun without --max-steps" if why.startswith("--max-steps") else "rerun the same command"
    return {"stopped_early": f"schedule cut at step {done} of {planned} by {why}; {rerun} to resume from checkpoint.pt"}


def _data_summary(prompts, sequences, kept, held) -> dict:
    by_source: dict[str, int] = {}
    for p in prompts:
        by_source[p.source] = by_source.get(p.source, 0) + 1
    response = sum(len(s.ids) - s.n_prompt for s in sequences)
    return {"prompts": len(prompts), "by_source": by_source, "train_sequences": len(kept), "heldout_sequences": len(held),
            "prompt_tokens": sum(s.n_prompt for s in sequences), "response_tokens": response}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    transformers.utils.logging.disable_progress_bar()
    card = report_errors(run, args, resumable=True)  # checkpoints and the data cache: a rerun resumes
    if card is None:
        return 2
    print(json.dumps({k: card[k] for k in ("name", "steps", "final_loss", "heldout", "wall_time")}, indent=1))
    return 0
