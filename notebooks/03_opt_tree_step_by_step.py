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
# one that **maximises the expected acceptance length** under a **node budget n**.
#
# * p̂(node) = product of the draft probabilities q along the node's path. If the draft is
#   calibrated, p̂ is the chance that the target accepts that whole path.
# * E(A) = Σ p̂ over the drafted nodes = the expected number of accepted drafted tokens.
#   Because a child's p̂ never exceeds its parent's, the **n nodes of largest p̂ always form a
#   connected tree**, and that tree maximises E(A) among trees of n nodes.
#
# Algorithm 1 grows a candidate tree T layer by layer: every frontier node proposes its top-n
# tokens, and the n candidates of largest p̂ become the next layer. After each layer,
# **E_sub(T, n)** = the sum of the n largest p̂ in T. Growth stops when a layer raises E_sub by
# at most **δ** (deeper layers would replace good shallow nodes by worse deep ones), or at
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
