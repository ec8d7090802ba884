# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: kernelspec,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 9 · Train your own draft: the EAGLE-head recipe
#
# A draft is only useful if it agrees with the target. The cheapest good drafts today are
# **EAGLE-style heads** (Li et al., arXiv 2401.15077): instead of predicting tokens from tokens,
# a single decoder layer predicts the target's *next last-layer feature* from
# fc([embedding of the current token ‖ the target's current feature]); the target's own frozen
# LM head turns that feature into a distribution q. It reuses everything the target already
# computed, so one layer suffices.
#
# The recipe in `opttree_core.train` (CLI: `python -m opttree_core train eagle --target smollm2-135m`):
#
# 1. **self-distillation data**: the target's own greedy answers to training prompts
#    (`train.data.self_distill`), so the head learns what *this* target says;
# 2. **features**: the target's last-layer features on those sequences (`compute_features`);
# 3. **training** (`train.loop.train` with `EagleRecipe`): smooth-L1 on the next feature plus
#    0.1 × soft cross-entropy through the frozen LM head, uniform noise on the input features,
#    AdamW with warm-up, resumable checkpoints;
# 4. **evaluation** on held-out sequences: top-1 agreement with the target and the MAL of
#    OPT-Tree decoding with the head as the draft (`train.evaluate`).
#
# Fast mode trains on a tiny random target in well under a minute: one layer with its attention
# output switched off, so its next token depends on the current token only (a random *bigram*
# model), and greedy continuations of random prompts stand in for the self-distillation answers.
# (A random model *with* attention is a chaotic function of its whole context: a thousand tokens
# of it teach a head nothing that carries over to held-out prompts.) Full mode trains a fresh head
# for the embedded SmolLM2 at a small budget (the shipped `eagle-smollm2` saw far more data).

# %% tags=["parameters"]
from treeviz.teaching import fast_mode, offline_plotly, pick

TARGET = pick("tiny", "smollm2-135m")
N_TRAIN, N_HELD = pick(24, 48), pick(4, 6)  # sequences
ANSWER_TOKENS = pick(40, 64)
EPOCHS = pick(12, 2)
LR = pick(3e-3, 5e-4)
BATCH = 4
print(f"fast mode: {fast_mode()} · renderer: {offline_plotly()}")

# %%
import tempfile
from pathlib import Path

import torch

import opttree_core as oc
from opttree_core.models import tiny_llama_config
from opttree_core.tools.train.cli import DEFAULT_GSM8K
from opttree_core.tools.train.data import Sequence, compute_features, self_distill
from opttree_core.tools.train.evaluate import heldout_agreement, heldout_mal
from opttree_core.tools.train.loop import TrainConfig, train
from opttree_core.tools.train.prompts import training_prompts
from opttree_core.tools.train.recipes import EagleRecipe

torch.manual_seed(0)
work = Path(tempfile.mkdtemp(prefix="opttree-nb09-"))
if TARGET == "tiny":
    torch.set_num_threads(1)  # a tiny model: thread start-up costs more than it saves (and the CPU may be shared)
    target = oc.load_model(tiny_llama_config(initializer_range=0.5, num_hidden_layers=1))
    target.model.model.layers[0].self_attn.o_proj.weight.data.zero_()  # attention off: a random bigram model
else:
    target = oc.load_model(TARGET)

# %% [markdown]
# ## 1–2 · Data: the target's own answers, and its features on them

# %%
if TARGET == "tiny":  # random prompts, greedy continuations (the tiny tokenizer has no chat template)
    gen = torch.Generator().manual_seed(0)
    sequences = []
    for _ in range(N_TRAIN + N_HELD):
        prompt = torch.randint(3, target.model.config.vocab_size, (6,), generator=gen)
        answer = oc.generate_autoregressive(target.model, prompt, oc.DecodeConfig(ANSWER_TOKENS, stop_at_eos=False))
        sequences.append(Sequence(prompt.tolist() + answer.token_ids, len(prompt), "random"))
else:
    prompts = training_prompts(DEFAULT_GSM8K, N_TRAIN // 2, 0,
                               N_TRAIN + N_HELD - N_TRAIN // 2, seed=0)
    sequences = self_distill(target, prompts, work / "sequences.jsonl", ANSWER_TOKENS, progress=False)
features = compute_features(target, sequences, work / "features.pt", progress=False)  # (len, hidden) each
train_seqs, held_seqs = sequences[:N_TRAIN], sequences[N_TRAIN:]
train_feats, held_feats = features[:N_TRAIN], features[N_TRAIN:]
print(f"{len(train_seqs)} training and {len(held_seqs)} held-out sequences, "
      f"{sum(len(s.ids) - s.n_prompt for s in train_seqs)} answer tokens to learn from")

# %% [markdown]
# ## 3 · Before and after training
# The same held-out prompts are decoded with OPT-Tree before and after, with the head as draft.

# %%
recipe = EagleRecipe(target.model)
make_drafter = lambda: oc.EagleDrafter(recipe.model, target.model, name="my-eagle")
policy = oc.OptTreePolicy(oc.OptTreeConfig(nodes=10, threshold=0.0, max_depth=4))
before = heldout_agreement(recipe, held_seqs, held_feats)
mal_before = heldout_mal(target.model, make_drafter, held_seqs, max_new_tokens=24, policy=policy)

history = train(recipe, train_seqs, train_feats, TrainConfig(epochs=EPOCHS, lr=LR, batch_size=BATCH, warmup_steps=5),
                checkpoint=work / "checkpoint.pt", progress=False)

after = heldout_agreement(recipe, held_seqs, held_feats)
mal_after = heldout_mal(target.model, make_drafter, held_seqs, max_new_tokens=24, policy=policy)
print(f"held-out top-1 agreement: {before['top1']:.2f} → {after['top1']:.2f}; "
      f"top-4: {before['top4']:.2f} → {after['top4']:.2f}")
print(f"MAL with OPT-Tree (n = 10): {mal_before:.2f} → {mal_after:.2f}  ({len(history)} training steps)")

# %%
import pandas as pd
import plotly.express as px

curve = pd.DataFrame(history)
curve["loss (moving mean)"] = curve["loss"].rolling(5, min_periods=1).mean()
px.line(curve, x="step", y=["loss", "loss (moving mean)"], title="training loss", width=720, height=340,
        template="none").show()
first, last = curve["loss"].head(5).mean(), curve["loss"].tail(5).mean()
assert last < first, "the loss should fall"
assert after["top1"] > before["top1"] and mal_after > mal_before, "training should raise agreement and MAL"

# %% [markdown]
# ## Save it, load it back, use it like a shipped draft
# `save_draft` writes fp16 weights + a manifest (kind, config, the target's signature, sha256);
# `load_drafter(path, target)` checks all of it before decoding with it.

# %%
from opttree_core.shipped import save_draft

manifest = save_draft(work / "my-eagle", "eagle", recipe.own_state(), recipe.config, target.name,
                      target.model.config, {"notebook": "09", "steps": len(history)})
loaded = oc.load_drafter(str(manifest), target)
prompt = torch.tensor(held_seqs[0].ids[: held_seqs[0].n_prompt])
config = oc.DecodeConfig(max_new_tokens=24)
tree_run = oc.generate(target.model, loaded, policy, prompt, config)
assert tree_run.token_ids == oc.generate_autoregressive(target.model, prompt, config).token_ids
print(f"reloaded draft: MAL {tree_run.mal:.2f} on the first held-out prompt")
