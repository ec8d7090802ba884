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
# * a **tree-attention mask**: node i may attend to the cached prefix, to itself and to its
#   ancestors, never to its siblings or cousins (row i of the *ancestor matrix*);
# * **positions by depth**: a node at depth d sits at position prefix_len + d, as if its path
#   had been written out alone (positions by flattened index silently break RoPE models:
#   docs/architecture.md, trap 1).
#
# With both, the target's logits at every node equal what sequential decoding of that node's
# path would give. Below we draft one tree and verify it (the accepted path is the longest one
# whose every token equals the target's choice below its parent, and the target's choice after
# the last accepted node is the bonus token), draw it, draw its mask, check the logits claim
# node by node, and draw where the draft put its probability (the p̂ icicle).

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
# The target caches every prompt token but the last, which becomes the tree's **root** (node 0).
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

prefix_len = state.prefix_len  # the cached prompt tokens (verification moves the state on)
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
wrong = forward(target.model, wrong_state.cache, tree.tokens, wrong_state.prefix_len + torch.arange(tree.n_nodes),
                tree_attention(tree, wrong_state.prefix_len)).logits
drift = (wrong - tree_logits).abs().amax(dim=1)  # (N,)
misplaced = torch.arange(tree.n_nodes) != tree.depth  # (N,)
print("max logit drift per depth:", {int(d): round(float(drift[tree.depth == d].max()), 3)
                                    for d in tree.depth.unique()})
assert float(drift[~misplaced].max()) < 1e-3 and float(drift[misplaced].min()) > 1e-3
