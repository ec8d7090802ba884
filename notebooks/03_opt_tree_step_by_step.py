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
# # 3 · OPT-Tree, step by step
#
# Which tree should the draft propose? OPT-Tree (Wang et al., arXiv 2406.17276) answers: the
# one that **maximises the expected acceptance length** under a **[node budget n](../docs/glossary.md#n)**.
#
# * [p̂](../docs/glossary.md#p-hat)(node) = product of the draft probabilities [q](../docs/glossary.md#q) along the node's path. If the draft is
#   calibrated, p̂ is the chance that the target accepts that whole path.
# * [E(A)](../docs/glossary.md#ea) = Σ p̂ over the drafted nodes = the expected number of accepted drafted tokens.
#   Because a child's p̂ never exceeds its parent's, the **n nodes of largest p̂ always form a
#   connected tree**, and that tree maximises E(A) among trees of n nodes.
#
# Algorithm 1 grows a candidate tree T layer by layer: every frontier node proposes its top-n
# tokens, and the n candidates of largest p̂ become the next layer. After each layer,
# **[E_sub(T, n)](../docs/glossary.md#esub)** = the sum of the n largest p̂ in T. Growth stops when a layer raises E_sub by
# at most **[δ](../docs/glossary.md#delta)** (deeper layers would replace good shallow nodes by worse deep ones), or at
# the depth cap. The answer is the global top-n of T.
#
# Below the construction is run with a record per layer (`opttree_core.policies.trace_opt_tree`:
# the engine's one growth loop `grow` with OPT-Tree's rule, recording each layer), checked
# against the engine's `OptTreePolicy`, then drawn by `treeviz.teaching`.

# %% tags=["parameters"]
from treeviz.teaching import fast_mode, offline_plotly, pick

PROMPT = "A shop sells pencils at 3 for $1. How much do 12 pencils cost? Explain step by step."
NODES = pick(8, 16)  # n
DELTA = 0.05  # δ
MAX_DEPTH = 8
DELTAS = pick([0.0, 0.1, 0.3], [0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5])
print(f"fast mode: {fast_mode()} · renderer: {offline_plotly()}")

# %%
import itertools

from IPython.display import display

import opttree_core as oc
from opttree_core.policies import trace_opt_tree
from opttree_core.verify import prefill_target
from treeviz.teaching import final_tree_figure, trace_figure, trace_table

target = oc.load_model("smollm2-135m")
drafter = oc.load_drafter("eagle-smollm2", target)
prompt_ids = oc.encode_prompt(target.tokenizer, PROMPT, chat=True)
state, features = prefill_target(target.model, prompt_ids)
config = oc.OptTreeConfig(nodes=NODES, threshold=DELTA, max_depth=MAX_DEPTH)

# %% [markdown]
# ## Layer by layer
# `E_sub(T, n)` never falls (adding nodes to T can only improve its best n), and the table
# shows the δ decision taken after each layer.

# %%
drafter.start(prompt_ids, features)
trace = trace_opt_tree(drafter, state.root_token, config)
table = trace_table(trace, DELTA)
display(table)
e_sub = table["E_sub(T, n)"].tolist()
assert all(b >= a - 1e-6 for a, b in itertools.pairwise(e_sub)), "E_sub(T, n) must be monotone"
last = trace.layers[-1]
assert last.stop and (last.gain <= DELTA or last.depth == MAX_DEPTH)
assert all(s.gain > DELTA for s in trace.layers[:-1])

# %% [markdown]
# ## The same tree as the engine's policy
# The replay and `OptTreePolicy.build` must pick the same nodes (the drafter is restarted so it
# sees the same prefix).

# %%
drafter.start(prompt_ids, features)
engine_tree = oc.OptTreePolicy(config).build(drafter, state.root_token, MAX_DEPTH, "cpu")
assert engine_tree.tokens.tolist() == trace.final.tokens.tolist()
assert engine_tree.parents.tolist() == trace.final.parents.tolist()
print(f"final tree: {trace.final.n_nodes - 1} nodes, depth {trace.final.max_depth}, "
      f"E(A) = {float(trace.final.p_hat[1:].sum()):.3f}")

# %% [markdown]
# ## Animated
# Press ▶ or drag the slider: each frame adds a layer (outlined); nodes inside the current top-n
# are opaque, coloured by p̂; the last frame keeps only the final top-n tree. The axes hold every
# node of every frame, so nothing drawn later falls off the picture.

# %%
texts = {t: target.tokenizer.decode([t]) for t in trace.layers[-1].tree.tokens.tolist()}
figure = trace_figure(trace, texts)
assert len(figure.frames) == len(trace.layers) + 1
x_low, x_high = figure.layout.xaxis.range
assert all(x_low < x < x_high for frame in figure.frames for x in frame.data[1].x), "a node is off the axes"
figure.show()

# %% [markdown]
# The final tree on its own: the n nodes of largest p̂ (colour), a connected tree under the root.

# %%
final = final_tree_figure(trace, texts)
assert len(final.data[1].x) == trace.final.n_nodes
final.show()

# %% [markdown]
# ## What δ does
# A larger δ stops earlier: fewer layers, a shallower tree, a little less E(A), less drafting.

# %%
import pandas as pd

rows = []
for delta in DELTAS:
    drafter.start(prompt_ids, features)
    run = trace_opt_tree(drafter, state.root_token, oc.OptTreeConfig(nodes=NODES, threshold=delta, max_depth=MAX_DEPTH))
    rows.append({"δ": delta, "layers drafted": len(run.layers), "tree depth": run.final.max_depth,
                 "E(A)": round(run.layers[-1].e_sub, 3)})
sweep = pd.DataFrame(rows)
display(sweep)
assert sweep["layers drafted"].is_monotonic_decreasing and sweep["E(A)"].is_monotonic_decreasing

# %% [markdown]
# ## Exercises
# Answerable from this notebook's text, code and output. Each solution is folded under its
# exercise (click **Solution**); notebooks/README.md says how to strip them for a hand-out.
#
# Exercises 1 and 2 use one small draft, with **n = 3**. Below the root the draft's top tokens
# have q: A 0.6, B 0.3, C 0.05. Below A: D 0.7, E 0.2, then 0.05. Below B: F 0.9, then at most 0.1
# each. Below C: at most 0.1 each. Below D: X 0.5, Y 0.3, then 0.1.
#
# **Exercise 1.** Compute p̂ for A, B, C, D (= A→D), E (= A→E) and F (= B→F). Which 3 nodes form
# the best tree of 3, what is its E(A), and is it connected? Compare with the chain A → D → X.

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# p̂ = product of q along the path: A 0.6, B 0.3, C 0.05, D 0.6 × 0.7 = 0.42, E 0.6 × 0.2 = 0.12,
# F 0.3 × 0.9 = 0.27. The 3 largest are **A (0.6), D (0.42), B (0.3)**: E(A) = 0.6 + 0.42 + 0.3 =
# **1.32** expected accepted drafts. It is connected (D's parent A is in it), as it must be: a
# child's p̂ never exceeds its parent's. The chain A → D → X has E(A) = 0.6 + 0.42 + 0.6 × 0.7 × 0.5
# = 0.6 + 0.42 + 0.21 = **1.23**: trading the deep X (0.21) for the second guess B (0.3) is what
# a tree buys.
#
# </details>

# %% [markdown]
# **Exercise 2.** Run Algorithm 1 by hand on the same draft (n = 3, max depth 8): which nodes join
# each layer, what are E_sub(T, n) and its gain after each layer, and where does growth stop with
# δ = 0.5? With δ = 0.05? Does the final tree differ?

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# Each frontier node proposes its top-n = 3 candidates and the 3 of largest p̂ join.
# **Layer 1**: A, B, C; E_sub = 0.6 + 0.3 + 0.05 = 0.95, gain 0.95 (from 0) > δ either way: grow.
# All three are in the top 3, so all are expanded. **Layer 2**: the candidates are D 0.42, F 0.27,
# E 0.12, then 0.03 (A's third child) and at most 0.03 (B's) and 0.005 (C's): D, F, E join. E_sub =
# 0.6 + 0.42 + 0.3 = 1.32, gain 0.37. With **δ = 0.5**: 0.37 ≤ 0.5, **stop after layer 2**. With
# **δ = 0.05**: grow on; only D is in the top 3, so only D is expanded. **Layer 3**: X 0.21,
# Y 0.126, 0.042 join; none beats B (0.3), so E_sub stays 1.32, gain 0 ≤ 0.05: stop. Both δ give
# **the same final tree** {A, D, B} with E(A) = 1.32; the small δ paid one more draft pass for
# nothing — the trade the δ sweep at the end of the notebook shows.
#
# </details>

# %% [markdown]
# **Exercise 3.** The first cell asserts that E_sub(T, n) never falls from layer to layer, and the
# intro claims the n nodes of largest p̂ always form a connected tree. Explain both in two lines
# each.

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# **Monotone**: a layer only *adds* nodes to T and removes none; the n largest p̂ of a bigger set
# are at least as large as those of a subset, so their sum cannot fall (the gain is ≥ 0).
# **Connected**: p̂(child) = p̂(parent) × q(child) ≤ p̂(parent) because q ≤ 1, and ties go to the
# shallower node (`TreeBuilder.ranking`), so a parent always ranks at or above each of its
# children; if a child is among the top n, so is its parent, and by induction its whole path to
# the root (docs/architecture.md, trap 6).
#
# </details>
