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
# OPT-Tree chooses trees by their **expected** acceptance E(A) = Σ p̂ over drafted nodes. That
# is only a good objective if E(A) predicts what actually happens: the acceptance length
# **A** of each verification step (accepted drafts + the bonus token, so A ≈ E(A) + 1 for a
# calibrated draft; docs/architecture.md, trap 5).
#
# The paper's Figure 4 checks it with a heatmap per draft/target pair: the count of steps per
# (E(A) rounded, A), with the correlation between the two. Here we log runs of the embedded
# SmolLM2 with two shipped drafts — the EAGLE-style head `eagle-smollm2` and the 2-layer draft
# LM `tiny-smollm2` — and draw the same figure from the logs. Every step of every run is one
# point; a positive correlation means a tree the draft believes in is a tree the target accepts.

# %% tags=["parameters"]
from treeviz.teaching import fast_mode, offline_plotly, pick

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
# an error, not a silent swap); fast mode uses the demo's four built-in prompts.

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
print(f"{len(logs)} runs, {sum(len(d.steps) for d in logs.values())} steps")

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
# Mean A against mean E(A) + 1 per run (n = one point per prompt and draft): points on the
# diagonal mean a calibrated draft, points above it an under-confident one (the target accepts
# more than the draft's p̂ promise), points below it an over-confident one.

# %%
summary = summarize_logs(logs)
display(summary[["group", "prompt", "steps", "tokens", "mean_ea", "mal"]].assign(prompt=summary["prompt"].str[:40]))

# %%
import plotly.express as px

fig = px.scatter(summary.assign(expected=summary["mean_ea"] + 1), x="expected", y="mal", color="group",
                 labels={"expected": "mean E(A) + 1", "mal": "MAL (mean A)"}, width=620, height=420,
                 template="none", title=f"per run (n = {len(summary)}): expected vs measured acceptance length")
top = float(max(summary["mal"].max(), summary["mean_ea"].max() + 1)) + 0.2
fig.add_shape(type="line", x0=1, y0=1, x1=top, y1=top, line={"dash": "dot", "color": "#888"})
fig.show()
assert (summary["mal"] >= 1).all()
