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
# # 2 · Tree attention: verifying a whole tree in one forward pass
#
# A chain wastes the draft's second guesses: when its top-1 token is wrong, the whole rest of
# the chain is lost. A **token tree** keeps several candidates per position (SpecInfer, Medusa,
# EAGLE, OPT-Tree). The target still verifies it in **one** pass, thanks to two inputs:
#
# * a **[tree-attention mask](../docs/glossary.md#tree-attention-mask)**: node i may attend to the cached prefix, to itself and to its
#   ancestors, never to its siblings or cousins (row i of the *ancestor matrix*);
# * **[positions by depth](../docs/glossary.md#positions-by-depth)**: a node at [depth](../docs/glossary.md#depth) d sits at position prefix_len + d, as if its path
#   had been written out alone (positions by flattened index silently break RoPE models:
#   docs/architecture.md, trap 1).
#
# With both, the target's logits at every node equal what sequential decoding of that node's
# path would give. Below we draft one tree and verify it (the [accepted path](../docs/glossary.md#accepted-path) is the longest one
# whose every token equals the target's choice below its parent, and the target's choice after
# the last accepted node is the bonus token), draw it, draw its mask, check the logits claim
# node by node, and draw where the draft put its probability (the [p̂](../docs/glossary.md#p-hat) icicle).

# %% tags=["parameters"]
from treeviz.teaching import fast_mode, offline_plotly, pick

PROMPT = "Write a Python function that checks whether a string is a palindrome."
NODES = pick(10, 24)  # node budget n of the tree
MAX_DEPTH = 4
DRAFT = "eagle-smollm2"
print(f"fast mode: {fast_mode()} · renderer: {offline_plotly()}")

# %%
import pandas as pd
import torch
from IPython.display import display

import opttree_core as oc
from opttree_core.verify import prefill_target, score_tree, tree_attention, verify

target = oc.load_model("smollm2-135m")
drafter = oc.load_drafter(DRAFT, target)
prompt_ids = oc.encode_prompt(target.tokenizer, PROMPT, chat=True)

# %% [markdown]
# ## Draft one tree
# The target caches the whole prompt in one forward pass, as `model.generate` does; its last token
# becomes the tree's **root** (node 0), already scored with the prompt, so a tree pass feeds the
# nodes below it.
# The drafter reads the target's features of the prefix; OPT-Tree (notebook 3) shapes the tree.

# %%
state, features = prefill_target(target.model, prompt_ids)
drafter.start(prompt_ids, features)
policy = oc.make_policy("opt-tree", nodes=NODES, threshold=0.0, max_depth=MAX_DEPTH)
tree = policy.build(drafter, state.root_token, MAX_DEPTH, "cpu")
nodes = pd.DataFrame({"token": [target.tokenizer.decode([t]) for t in tree.tokens.tolist()],
                      "parent": tree.parents.tolist(), "depth": tree.depth.tolist(),
                      "position": tree.position_ids(state.prefix_len).tolist(), "p̂": tree.p_hat.tolist()})
display(nodes)

# %% [markdown]
# ## One verification step, and the tree it checked
# Greedy verification compares each node's token with the target's argmax below its parent. The
# picture: the accepted path outlined, each node filled with its p̂ colour (rejected nodes ringed
# in grey), and the bonus token — the target's own choice after the last accepted node — as the
# orange diamond.

# %%
from opttree_core.records import StepRecord
from opttree_core.treelog import step_log
from treeviz import attention_mask_figure, icicle_figure, tree_figure

prefix_len = state.prefix_len  # the prompt tokens before the root (verification moves the state on)
result = verify(state, tree)
words = [target.tokenizer.decode([t]) for t in result.new_tokens]
print(f"accepted nodes {result.path} → tokens {words[:-1]}, bonus token {words[-1]!r}, A = {result.accept_length}")
target_choice = result.target_tokens[tree.parents.clamp(min=0)]
assert all(int(tree.tokens[v]) == int(target_choice[v]) for v in result.path)
assert result.accept_length == len(result.path) + 1
data = step_log(StepRecord(0, tree, result.target_tokens, result.accepted, result.new_tokens), target.tokenizer)
assert data.steps["bonus_text"].iloc[0] == words[-1]  # the log keeps the bonus token's text
tree_figure(data, 0).show()

# %% [markdown]
# ## The ancestor mask
# `mask[i, j]` is True when j is i or an ancestor of i. Each row therefore holds depth + 1 ones,
# and the full attention of a node is `[prefix (all ones) | its mask row]`: the picture draws the
# prefix as one block on the left (every node sees all of it), then one column per node, rows and
# columns labelled `index:token`. Cells where both nodes are on the accepted path are in the
# accepted colour.

# %%
mask = tree.ancestor_mask  # (N, N) bool
allowed = tree_attention(tree, prefix_len)  # (N, prefix_len + N)
assert mask.shape == (tree.n_nodes, tree.n_nodes) and mask.diagonal().all()
assert (mask.sum(1) == tree.depth + 1).all()
assert all(mask[i, tree.parents[i]] for i in range(1, tree.n_nodes))
assert allowed.shape == (tree.n_nodes, prefix_len + tree.n_nodes) and allowed[:, :prefix_len].all()
print(f"{tree.n_nodes} nodes, mask {tuple(mask.shape)}, attention {tuple(allowed.shape)}")
attention_mask_figure(data, 0, prefix_len=prefix_len).show()

# %% [markdown]
# ## Every node's logits equal sequential decoding of its path
# One tree pass (`score_tree`) against one plain forward pass per node over
# prompt + the node's path.

# %%
check_state, _ = prefill_target(target.model, prompt_ids)
tree_logits = score_tree(check_state, tree).logits  # (N, V)
worst = 0.0
for node in range(tree.n_nodes):
    path = prompt_ids.tolist() + tree.tokens[tree.path_to(node)].tolist()
    with torch.inference_mode():
        sequential = target.model(input_ids=torch.tensor([path])).logits[0, -1]  # (V,)
    worst = max(worst, float((tree_logits[node] - sequential).abs().max()))
print(f"largest logit difference over {tree.n_nodes} nodes: {worst:.2e}")
assert worst < 1e-3

# %% [markdown]
# ## The p̂ icicle
# Each node's area is its p̂, the probability the draft gives its whole path; a node's children
# share its area, so the icicle shows where the draft spent its belief (accepted nodes in the
# accepted colour).

# %%
icicle_figure(data, 0).show()

# %% [markdown]
# ## The trap: positions by flattened index
# Feed the same tree with positions prefix_len + node index instead of prefix_len + depth:
# every node whose index differs from its depth (all but the root and node 1) now sits at a
# wrong rotary position, and its logits drift.

# %%
from opttree_core.modelcall import forward

wrong_state, _ = prefill_target(target.model, prompt_ids)
wrong_state.discard_scored()  # drop the root's cached entry: this pass feeds the whole tree, root included
wrong = forward(target.model, wrong_state.cache, tree.tokens, wrong_state.prefix_len + torch.arange(tree.n_nodes),
                tree_attention(tree, wrong_state.prefix_len)).logits
drift = (wrong - tree_logits).abs().amax(dim=1)  # (N,)
misplaced = torch.arange(tree.n_nodes) != tree.depth  # (N,)
print("max logit drift per depth:", {int(d): round(float(drift[tree.depth == d].max()), 3)
                                    for d in tree.depth.unique()})
assert float(drift[~misplaced].max()) < 1e-3 and float(drift[misplaced].min()) > 1e-3

# %% [markdown]
# ## Exercises
# Answerable from this notebook's text, code and output. Each solution is folded under its
# exercise (click **Solution**); notebooks/README.md says how to strip them for a hand-out.
#
# **Exercise 1.** A tree has 5 nodes in breadth-first order, with `parents = [-1, 0, 0, 1, 3]`
# (node 0 is the root), and the target has cached `prefix_len = 10` prompt tokens. Write down each
# node's depth and position, the rows of its ancestor mask, and the shape of
# `tree_attention(tree, 10)`. How many `True` does the mask hold?

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# Depths `[0, 1, 1, 2, 3]` (nodes 1 and 2 are children of the root, 3 of 1, 4 of 3), so positions
# `prefix_len + depth = [10, 11, 11, 12, 13]`: the two siblings share position 11. Mask rows
# (node i sees itself and its ancestors): 0 → {0}; 1 → {0, 1}; 2 → {0, 2}; 3 → {0, 1, 3};
# 4 → {0, 1, 3, 4}. Each row holds depth + 1 ones (the notebook's assert), 1 + 2 + 2 + 3 + 4 =
# **12** in all. The full attention is `(N, prefix_len + N)` = **(5, 15)**: ten all-`True`
# prefix columns, then the mask.
#
# </details>

# %% [markdown]
# **Exercise 2.** For the same tree, which nodes would sit at a wrong position if positions were
# `prefix_len + node index` (the trap in the last section)? Why can a plain chain never show this
# bug?

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# By index the positions would be `[10, 11, 12, 13, 14]` against the correct `[10, 11, 11, 12, 13]`:
# **nodes 2, 3 and 4** (index ≠ depth) are misplaced, and their logits drift; the root and node 1
# are right, as the notebook's assert expects. In a chain every node is the only one at its depth,
# so node i sits at depth i and index and depth coincide: the bug only appears once a node has a
# sibling (docs/architecture.md, trap 1).
#
# </details>

# %% [markdown]
# **Exercise 3.** The same tree drafts the tokens node 1 " is", node 2 " was", node 3 " a",
# node 4 " list". The target's argmax *after* each node (`result.target_tokens`) is: after the
# root " is", after node 1 " a", after node 2 " the", after node 3 " hash", after node 4 " of".
# Under greedy verification, which nodes are accepted, what is the bonus token, and what are the
# step's new tokens and A?

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# A node is accepted when its token equals the target's choice after its *parent* and its parent
# is accepted (the notebook checks `tree.tokens[v] == target_tokens[parent(v)]` along the path).
# Node 1 " is" = the choice after the root: accepted. Node 2 " was" ≠ " is": rejected. Node 3 " a"
# = the choice after node 1: accepted. Node 4 " list" ≠ " hash" (the choice after node 3):
# rejected. The accepted path is **[1, 3]**, the bonus token is the target's choice after node 3,
# **" hash"**, the new tokens are " is a hash" and **A = 3** = len(path) + 1 (the notebook's
# `result.accept_length == len(result.path) + 1`). The choices after nodes 2 and 4 are never used.
#
# </details>
