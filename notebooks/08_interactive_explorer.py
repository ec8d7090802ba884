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
# # 8 · Interactive explorer
#
# `treeviz.widgets.TreeExplorer` puts everything of the earlier notebooks behind controls:
#
# * **policy** (every policy registered in `opttree_core.policies.registry.POLICIES`), the node
#   budget n, and a control for every parameter of the policy, typed from its config (OPT-Tree:
#   nodes, δ, max depth; DynaTree: its twelve; Sequoia: its acceptance vector, ...);
# * the **prompt**, temperature, new tokens, the chat template;
# * **Run** decodes the prompt (with "live" ticked each tree appears as soon as it is verified);
# * the **step slider** and ▶ walk through the logged trees: the tree (accepted path outlined,
#   bonus token as a diamond), its tree-attention mask and p̂ icicle, and the token stream with
#   the current step outlined;
# * **walk through this step, frame by frame** (tick it): the step's draft layers one at a time with
#   the attention mask growing beside the tree, then the one target forward (the target's own token
#   under every node), the accepted path and the bonus token — ▶ or drag its slider. The HTML page
#   (`python -m treeviz html`) has the same frames for the step it opens on.
#
# `RegrowExplorer` takes one step of a run and re-grows its tree live as δ, n, max depth or the
# policy change (one step from that step's prefix: no re-decoding). `CompareExplorer` grows two
# policies side by side from the **identical prefix and root** of one step, at the **same n**, and
# the same target verifies each. In a live JupyterLab every control works; in the exported HTML
# (`make html`) the widget needs a kernel, so its current figures are shown statically below it.

# %% tags=["parameters"]
from treeviz.teaching import fast_mode, offline_plotly, pick

PROMPT = "What are three good habits for staying healthy?"
POLICY = "opt-tree"
NODES = pick(8, 16)
MAX_NEW_TOKENS = pick(24, 64)
DRAFT = "eagle-smollm2"
print(f"fast mode: {fast_mode()} · renderer: {offline_plotly()}")

# %%
import opttree_core as oc
from treeviz.plotly_tree import TREE_TRACES
from treeviz.teaching import show_widget
from treeviz.widgets import CompareExplorer, RegrowExplorer, TreeExplorer

target = oc.load_model("smollm2-135m")
explorer = TreeExplorer(target=target, drafter=DRAFT, prompt=PROMPT, policy=POLICY, nodes=NODES,
                        params={"threshold": 0.1, "max_depth": 6}, max_new_tokens=MAX_NEW_TOKENS, chat=True, live=False)
data = explorer.run()  # what the Run button does
assert data is not None and data.steps["a"].sum() == len(data.meta["token_ids"]) and len(data.steps) > 1
print(f"{len(data.steps)} steps, MAL {data.steps['a'].mean():.2f}")

# %% [markdown]
# Moving the slider redraws the tree (each figure's widget state is its complete plotly figure,
# so JupyterLab draws the latest one even after a reload: treeviz/README.md says why): we move
# it to the step with the longest acceptance and check the figure now shows that step's nodes.

# %%
NODES_TRACE = TREE_TRACES.index("nodes")
before = [row[1] for row in explorer.browser.tree.figure.data[NODES_TRACE].customdata]
step = int(data.steps["a"].iloc[1:].idxmax())  # a step other than the one shown (step 0)
explorer.browser.slider.value = step
after = [row[1] for row in explorer.browser.tree.figure.data[NODES_TRACE].customdata]
nodes_of_step = data.nodes[data.nodes["step"] == step]["token"].tolist()
assert after == nodes_of_step and after != before
assert f"step {step}" in explorer.browser.facts.value
drawn = explorer.browser.tree.widget.outputs[0]["data"]["application/vnd.plotly.v1+json"]  # what the page draws
assert [row[1] for row in drawn["data"][NODES_TRACE]["customdata"]] == nodes_of_step
print(f"the slider moved from step 0 to step {step} (A = {data.steps['a'].iloc[step]}): the explorer below shows "
      f"step {step}'s {len(nodes_of_step)} nodes")
show_widget(explorer)

# %% [markdown]
# Changing a control and pressing Run re-decodes: here the node budget is cut to 2, which must
# change the trees (and usually the MAL).

# %%
explorer.policy.nodes.value = 2
smaller = explorer.run()
assert smaller.steps["n_nodes"].max() <= 3 < data.steps["n_nodes"].max()
assert explorer.browser.tree.figure.data[NODES_TRACE].customdata is not None
print(f"n = {NODES}: MAL {data.steps['a'].mean():.2f} · n = 2: MAL {smaller.steps['a'].mean():.2f}")

# %% [markdown]
# ## One step, re-grown live
# The step with the longest acceptance again, its tree re-grown from the text committed before it.
# Raising δ stops OPT-Tree's growth earlier: its n nodes are then chosen from fewer layers (a
# shallower tree), and E(A) can only fall (here δ goes from 0 to 0.9). Each change grows one step
# (one draft pass per layer and one target pass), not the whole answer.

# %%
regrow = RegrowExplorer(data, target=target, drafter=DRAFT, policy=POLICY, nodes=NODES,
                        params={"threshold": 0.0, "max_depth": 6})
regrow.slider.value = step
side = regrow.sides[0]
rows = []
for delta in (0.0, 0.9):
    side.controls.field("threshold").value = delta  # what moving the δ control does
    one, layers = side.data.steps.iloc[0], int(side.data.nodes["depth"].max())
    rows.append((delta, layers, float(one["ea"]), int(one["a"])))
    print(f"δ = {delta}: {int(one['n_nodes']) - 1} drafted nodes over {layers} layers, E(A) = {one['ea']:.2f}, "
          f"A = {one['a']}")
assert rows[1][1] <= rows[0][1] and rows[1][2] <= rows[0][2] + 1e-6
assert side.data.meta["prompt_ids"] == data.prefix(step)
show_widget(regrow)

# %% [markdown]
# ## Two policies side by side, like for like
# OPT-Tree against a chain, both grown at the same step from the identical prefix and root, at the
# same n, and verified by the same target: E(A) and A say what each would have got from there.

# %%
compare = CompareExplorer(data, target=target, drafter=DRAFT, nodes=NODES)
compare.slider.value = step
left, right = (side.data for side in compare.sides)
assert left.meta["prompt_ids"] == right.meta["prompt_ids"] == data.prefix(step)  # the identical prefix and root
assert (left.meta["policy"], right.meta["policy"]) == ("opt-tree", "chain")
for one in (left, right):
    print(f"{one.meta['policy']:>8} at n = {NODES}: E(A) = {one.steps['ea'].iloc[0]:.2f}, A = {one.steps['a'].iloc[0]}")
show_widget(compare)
