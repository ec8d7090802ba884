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
# # 7 · Structure shoot-out: tree policies, AR interleaved
#
# Full mode runs every registered policy on Spec-Bench (one prompt per task and per MT-Bench
# category); fast mode, for a quick look in class, runs four of them (opt-tree, chain, eagle-static,
# eagle2) on the demo's two shortest prompts. The configuration printed below says which ran.
#
# Many tree shapes have been proposed for speculative decoding: a **chain** (classic),
# fixed **k-ary** and **binary** trees, EAGLE's static 25-node tree (**eagle-static**), EAGLE-2's
# dynamic rerank (**eagle2**), **Sequoia**'s positional-acceptance DP, **DynaTree**,
# cumulative-log-probability beams (**cum-logprob**), **OPT-Tree** and its hardware-aware
# variant **opt-tree-auto**. All of them are registered in `opttree_core.policies.registry.POLICIES`.
#
# A fair comparison needs the same prompts, the same token cap, the same process, and the runs
# interleaved so that drift (other processes, thermal state) hits every method alike
# (docs/architecture.md, trap 9). The bench harness `opttree_core.tools.bench.run_bench` does exactly
# that: per prompt it runs every method in a rotated order, and reports each method's **MAL**
# and its **speedup** = its tokens/s over AR's on the same prompts, pooled over them (Σ tokens / Σ
# seconds of each), with a 95 % interval over the prompts: the table and the bar chart below show
# the same numbers.
#
# Speedups on a shared 2-core CPU are noisy; MAL is a property of draft + policy and is not.

# %% tags=["parameters"]
from opttree_core.policies.registry import POLICIES as ALL_POLICIES
from treeviz.teaching import fast_mode, in_words, offline_plotly, pick

POLICIES = pick(["opt-tree", "chain", "eagle-static", "eagle2"], sorted(ALL_POLICIES))
BUDGET = pick(8, 16)
MAX_NEW_TOKENS = pick(24, 64)
PER_CATEGORY = pick(None, 1)  # full: Spec-Bench, 1 prompt per task and per MT-Bench category (13)
print(f"fast mode: {fast_mode()} · renderer: {offline_plotly()}")

# %% [markdown]
# ## The benchmark configuration
# Fast mode decodes the demo's two shortest prompts from a plain text file; full mode reads
# Spec-Bench from `../shared/data/spec_bench/question.jsonl` (missing: an error, not a swap).

# %%
import tempfile
from pathlib import Path

from IPython.display import display

from opttree_core.tools.bench import run_bench, summarize
from opttree_core.tools.datasets import DEFAULT_SPEC_BENCH
from opttree_core.tools.demo import PROMPTS

out_dir = Path(tempfile.mkdtemp(prefix="opttree-nb07-")) / "run"
if fast_mode():
    prompt_file = out_dir.parent / "prompts.txt"
    prompt_file.write_text("\n".join(sorted(PROMPTS.values(), key=len)[:2]) + "\n")
    datasets = [{"kind": "prompts", "path": str(prompt_file)}]
else:
    datasets = [{"kind": "spec_bench", "path": str(DEFAULT_SPEC_BENCH), "mt_bench_per_category": PER_CATEGORY,
                 "per_category": PER_CATEGORY}]
config = {"target": "smollm2-135m", "drafters": ["eagle-smollm2"], "policies": POLICIES, "budgets": [BUDGET],
          "temperatures": [0.0], "max_new_tokens": MAX_NEW_TOKENS, "peers": ["ar"], "datasets": datasets}
display(config)

# %% [markdown]
# ## Run it
# Every (prompt, method) pair is appended to `progress.jsonl` as it finishes, so an interrupted
# run resumes; each tree-decoding pair also leaves a full tree log under `logs/`.

# %%
run = run_bench(config, out_dir, progress=False)
results, summary = run.results, summarize(out_dir)
print(f"{run.ran} pairs run; skipped: {run.skipped or 'none'}")
assert set(results["method"]) == set(summary["method"]) and len(summary) == len(POLICIES) + 1
assert results.loc[results["kind"] == "tree", "output_matches_ar"].all(), "greedy tree decoding must equal AR"

# %% [markdown]
# ## MAL and speedup per policy

# %%
table = (summary[["method", "policy", "budget", "mal", "tokens_per_s", "speedup", "expected_acceptance"]]
         .sort_values("mal", ascending=False).reset_index(drop=True).round(3))
display(in_words(table))
trees = summary[summary["kind"] == "tree"].set_index("policy")
assert (trees["mal"] >= 1).all() and trees.loc["opt-tree", "mal"] > trees.loc["chain", "mal"] - 0.25

# %% [markdown]
# ## Why a speedup below 1 here
# A speedup under 1 in the table means the method was slower than AR on this CPU. Every step
# verifies n + 1 rows and drafts several layers, so a step costs more than one AR token; it buys
# MAL tokens. The method wins only when a step costs less than MAL AR tokens — each line below
# gives both numbers for this run (pooled over its prompts).

# %%
from treeviz.runs import shootout_table
from treeviz.teaching import speed_verdict

shootout = shootout_table(results)  # the summary's speedups, with their 95 % intervals over the prompts
intervals = shootout.set_index("method")[["speedup_lo", "speedup_hi"]]
ar_rows = results[results["kind"] == "ar"]
ar_token_s = ar_rows["seconds"].sum() / ar_rows["new_tokens"].sum()
for (method, policy), rows in results[results["kind"] == "tree"].groupby(["method", "policy"]):
    print(speed_verdict(f"{policy} n={BUDGET}", rows["new_tokens"].sum() / rows["steps"].sum(),
                        rows["seconds"].sum() / rows["steps"].sum(), ar_token_s,
                        interval=tuple(intervals.loc[method])))

# %%
import plotly.express as px

from treeviz import pooled_speedup_figure

px.bar(trees.reset_index().sort_values("mal"), x="policy", y="mal", title=f"MAL per policy (n = {BUDGET})",
       width=640, height=360, template="none").show()
figure = pooled_speedup_figure(shootout)  # the table's numbers, as bars
figure.show()
bars = dict(zip(figure.data[0].x, figure.data[0].y))
assert all(abs(bars[p] - trees.loc[p, "speedup"]) < 1e-12 for p in trees.index), "bars and table must agree"
