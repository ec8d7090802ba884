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
# # 5 · Expected versus actual acceptance length (paper Figure 4)
#
# OPT-Tree chooses trees by their **expected** acceptance [E(A)](../docs/glossary.md#ea) = Σ [p̂](../docs/glossary.md#p-hat) over drafted nodes. That
# is only a good objective if E(A) predicts what actually happens: the acceptance length
# **[A](../docs/glossary.md#a)** of each verification step (accepted drafts + the bonus token, so A ≈ E(A) + 1 for a
# calibrated draft; docs/architecture.md, trap 5).
#
# The paper's Figure 4 checks it with a heatmap per draft/target pair: the count of steps per
# (E(A) rounded, A), with the correlation between the two. Here we log runs of the embedded
# SmolLM2 with two shipped drafts — the EAGLE-style head `eagle-smollm2` and the 2-layer draft
# LM `tiny-smollm2` — and draw the same figure from the logs. Every step of every run is one
# point; a positive correlation means a tree the draft believes in is a tree the target accepts.

# %% tags=["parameters"]
from treeviz.teaching import fast_mode, in_words, offline_plotly, pick

DRAFTS = ["eagle-smollm2", "tiny-smollm2"]
NODES = pick(8, 32)
THRESHOLD = 0.05
MAX_DEPTH = 8
MAX_NEW_TOKENS = pick(32, 128)
N_PROMPTS = pick(2, 20)  # fast mode: the demo's own prompts; full: Spec-Bench (one per task/category)
print(f"fast mode: {fast_mode()} · renderer: {offline_plotly()}")

# %% [markdown]
# ## Prompts and runs
# Full mode reads Spec-Bench from `../shared/data/spec_bench/question.jsonl` (a missing file is
# an error, not a silent swap); fast mode uses the first `N_PROMPTS` (2) of the demo's built-in
# prompts. The next section prints how many steps each draft's correlation rests on: with a few
# dozen steps, read r as a rough sign, not an estimate (full mode runs 20 prompts).

# %%
import opttree_core as oc
from opttree_core.tools.datasets import spec_bench
from opttree_core.tools.demo import PROMPTS
from treeviz.rerun import Rerunner, RunRequest

texts = list(PROMPTS.values()) if fast_mode() else [p.text for p in spec_bench(per_task=2, per_category=1)]
texts = texts[:N_PROMPTS]
target = oc.load_model("smollm2-135m")
logs = {}
for draft in DRAFTS:
    runner = Rerunner(target, draft)
    for i, text in enumerate(texts):
        request = RunRequest(prompt=text, policy="opt-tree",
                             params={"nodes": NODES, "threshold": THRESHOLD, "max_depth": MAX_DEPTH},
                             max_new_tokens=MAX_NEW_TOKENS, chat=True)
        logs[f"{draft} · prompt {i}"] = runner.run(request)
print(f"{len(texts)} prompts × {len(DRAFTS)} drafts = {len(logs)} runs, "
      f"{sum(len(d.steps) for d in logs.values())} steps")

# %% [markdown]
# ## The heatmaps and their correlation
# Each cell counts the steps with that rounded E(A) and that A; both panels span the same ranges,
# and a cell without a step is left blank. The dotted line is **A = E(A) + 1**, where a calibrated
# draft's steps fall on average (E(A) counts accepted *drafted* tokens, A adds the bonus token).
# Steps **above** the line accepted more than the draft expected (an under-confident draft: its
# p̂ are too small); steps **below** it accepted less (over-confident). n under each title is the
# number of steps in the panel; r and ρ are computed on the unrounded E(A).

# %%
from IPython.display import display

from treeviz import correlation, ea_a_frame, ea_heatmap_figure, summarize_logs

frame = ea_a_frame(logs)
print(f"{len(texts)} prompts × {len(DRAFTS)} drafts = {len(logs)} runs; steps per draft:",
      frame.groupby("group").size().to_dict())
ea_heatmap_figure(frame).show()
for group, part in frame.groupby("group"):
    r = correlation(part)
    above = float((part["a"] > part["ea"] + 1).mean())
    print(f"{group}: {r}; {above:.0%} of its steps lie above A = E(A) + 1")
    assert r.pearson > 0, f"E(A) should predict A for {group}"

# %% [markdown]
# ## Calibration at a glance
# Mean A ([MAL](../docs/glossary.md#mal)) against mean E(A) + 1 per run (n = one point per prompt and draft): points on the
# diagonal mean a calibrated draft, points above it an under-confident one (the target accepts
# more than the draft's p̂ promise), points below it an over-confident one.

# %%
summary = summarize_logs(logs)
display(in_words(summary[["group", "prompt", "steps", "tokens", "mean_ea", "mal"]].assign(prompt=summary["prompt"].str[:40])))

# %%
import plotly.express as px

fig = px.scatter(summary.assign(expected=summary["mean_ea"] + 1), x="expected", y="mal", color="group",
                 labels={"expected": "mean E(A) + 1", "mal": "MAL (mean A)"}, width=620, height=420,
                 template="none", title=f"per run (n = {len(summary)}): expected vs measured acceptance length")
top = float(max(summary["mal"].max(), summary["mean_ea"].max() + 1)) + 0.2
fig.add_shape(type="line", x0=1, y0=1, x1=top, y1=top, line={"dash": "dot", "color": "#888"})
fig.show()
assert (summary["mal"] >= 1).all()

# %% [markdown]
# ## Exercises
# Answerable from this notebook's text, code and output. Each solution is folded under its
# exercise (click **Solution**); notebooks/README.md says how to strip them for a hand-out.
#
# **Exercise 1.** One step's tree has four drafted nodes with p̂ 0.8, 0.5, 0.2 and 0.1. What is its
# E(A), in which heatmap column does the step fall (`ea_bin`), and what A does a calibrated draft
# expect on average? The target accepted two drafted tokens: what is A, and does the step count
# as above or below the line A = E(A) + 1?

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# E(A) = 0.8 + 0.5 + 0.2 + 0.1 = **1.6** expected accepted *drafted* tokens, so the step falls in
# column **2** (`ea_bin` = E(A) rounded to the nearest integer) and a calibrated draft expects
# A ≈ E(A) + 1 = **2.6** on average (the + 1 is the bonus token). Two accepted drafts plus the bonus
# token give **A = 3** > 2.6: the step lies **above** the line (the notebook's `above` count
# compares A with the unrounded E(A) + 1). One step says little: A is an integer draw around 2.6;
# only many steps tell whether the draft is calibrated.
#
# </details>

# %% [markdown]
# **Exercise 2.** In the per-run summary, run X has mean E(A) 1.0 and MAL 2.4; run Y has mean E(A)
# 1.2 and MAL 1.5. Where does each point fall in the calibration scatter, and which draft is
# over-confident, which under-confident?

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# The scatter plots MAL against mean E(A) + 1. Run X: (2.0, 2.4), **above** the diagonal — the
# target accepted 2.4 − 1 = 1.4 drafted tokens per step where the draft expected 1.0: its p̂ are too
# small, an **under-confident** draft. Run Y: (2.2, 1.5), **below** it — 0.5 accepted drafts per
# step against 1.2 expected: an **over-confident** draft, whose p̂ promise more than the target
# gives. Both could still show a positive correlation between E(A) and A: calibration (the level)
# and correlation (the ranking of steps) are different questions.
#
# </details>

# %% [markdown]
# **Exercise 3.** With this notebook's fast-mode parameters (`NODES = 8`, `MAX_DEPTH = 8`), why can
# no step have E(A) above 8, A above 9, or A below 1? Which of these does the last assert check
# for whole runs?

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# E(A) is a sum of p̂ over at most `NODES` = 8 drafted nodes, each a product of probabilities, so
# each p̂ ≤ 1 and **E(A) ≤ 8**. (It is in fact at most the tree's depth too, since the p̂ of the nodes
# at one depth sum to at most 1: [glossary, E(A)](../docs/glossary.md#ea).) Accepted drafts lie on one path from the
# root, at most `MAX_DEPTH` = 8 deep, and the bonus token adds one: **A ≤ 9**. Every step adds the
# bonus token, so **A ≥ 1**, and hence MAL, the mean of A, is at least 1: that is the last
# assert, `(summary["mal"] >= 1).all()`.
#
# </details>
