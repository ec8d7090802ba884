"""The engine on a CUDA device. Every test is marked ``cuda`` and skipped where CUDA is absent;
``benchmarks/gpu_check.sh`` runs them first (``pytest -m cuda``), and ``make test`` runs them on a
machine that has a GPU.

- Every greedy step and every ``TreeLog.record`` run under ``torch.cuda.set_sync_debug_mode
  ("error")``: the only syncs are the named host reads of ``opttree_core.syncs`` (one per step,
  ``verify.choose_greedy``, plus the per-layer reads of the policies that grow on host decisions
  and of the n-gram table); any other raises. ``tests/test_host_syncs.py`` checks the same on CPU.
- Greedy tree decoding equals transformers' greedy ``generate`` in fp32, for every registered
  policy and drafter, on tiny random models and on SmolLM2-135M with the shipped drafts.
- In bf16 and fp16, how often tree decoding's output equals plain decoding's is measured and
  reported, not asserted: kernels for different query lengths may round differently. With
  ``OPTTREE_CUDA_REPORT=PATH`` the rates are written there as JSON (gpu_check's table reads them).
- Lossless sampling: tree sampling's first two tokens against plain sampling's, a two-sample χ².
"""
import json
import os
from pathlib import Path

import pytest
import torch

from opttree_core.decoding import DecodeConfig, generate, generate_autoregressive
from opttree_core.drafters import DraftLMDrafter
from opttree_core.policies import OptTreeConfig, OptTreePolicy
from opttree_core.policies.registry import POLICIES
from opttree_core.skinny import use_skinny_matmul
from opttree_core.syncs import NGRAM_READ, STEP_READ
from opttree_core.treelog import TreeLog
from conftest import first_two_tokens_pvalue, hf_greedy, perturbed_copy, random_prompt, tiny_model
from golden import SMOLLM_PROMPTS, TINY_PROMPTS, make_policy, tiny_drafters
from sync_guard import cuda_sync_error, guarded_steps

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: the cuda tests run on a GPU (benchmarks/gpu_check.sh)")]
DEVICE = torch.device("cuda")
SHIPPED = ("eagle-smollm2", "tiny-smollm2", "ngram", "self")
HALF_PROMPTS = (*SMOLLM_PROMPTS, "What are the three primary colours? Answer in one line.",
                "Summarise the plot of Romeo and Juliet in two sentences.")


def on_cuda(model):
    use_skinny_matmul(model, on=False)  # the few-row CPU kernels stay on the CPU
    return model.to(DEVICE)


@pytest.fixture(scope="module")
def tiny():
    target = on_cuda(tiny_model(seed=1))
    return target, tiny_drafters(target)


def decode(target, drafter, policy_name: str, prompt, tokens: int, log: bool = False):
    policy = make_policy(policy_name, 16)
    tree_log = TreeLog(tokens, policy.max_nodes + 1, device=DEVICE) if log else None
    config = DecodeConfig(max_new_tokens=tokens)  # stops at an EOS, as generate does
    return generate(target, drafter, policy, prompt.to(DEVICE), config, log=tree_log)


def check_reads(steps: list[list[str]], policy: str, drafter: str) -> None:
    growth = make_policy(policy, 16).host_reads
    allowed = {STEP_READ, *growth, *((NGRAM_READ,) if drafter == "ngram" else ())}
    assert steps and all(reads.count(STEP_READ) == 1 and set(reads) <= allowed for reads in steps), steps
    if not growth and drafter != "ngram":
        assert all(reads == [STEP_READ] for reads in steps), steps


@pytest.mark.parametrize("drafter", ["draft-lm", "eagle", "ngram"])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_greedy_steps_sync_only_at_named_reads_and_equal_generate(tiny, policy, drafter, monkeypatch):
    target, drafters = tiny
    prompt = torch.tensor(TINY_PROMPTS[0], device=DEVICE)
    steps = guarded_steps(monkeypatch, cuda_sync_error)
    result = decode(target, drafters[drafter], policy, prompt, 16, log=True)
    monkeypatch.undo()
    assert len(steps) == result.steps
    check_reads(steps, policy, drafter)
    assert result.token_ids == hf_greedy(target, prompt, 16)


def test_tree_log_record_makes_no_sync(tiny, monkeypatch):
    target, drafters = tiny
    records = []
    decode_config = DecodeConfig(max_new_tokens=12, stop_at_eos=False)
    generate(target, drafters["eagle"], make_policy("eagle2", 16), torch.tensor(TINY_PROMPTS[1], device=DEVICE),
             decode_config, on_step=records.append)
    log = TreeLog(max_steps=2, max_nodes=17, device=DEVICE)  # grows inside the guarded region
    with cuda_sync_error("TreeLog.record"):
        for record in records:
            log.record(record)
    assert log.n_steps == len(records) and log.to_frames().steps["a"].tolist() == [r.a for r in records]


@pytest.fixture(scope="module")
def smollm2():
    from opttree_core import encode_prompt, load_drafter, load_model

    target = load_model("smollm2-135m", device="cuda")
    drafters = {name: load_drafter(name, target) for name in SHIPPED}
    prompts = [encode_prompt(target.tokenizer, text, chat=True) for text in SMOLLM_PROMPTS]
    return target, drafters, prompts


@pytest.fixture(scope="module")
def smollm2_greedy(smollm2):
    """transformers' greedy generate on each prompt, 32 tokens: the reference for every run."""
    target, _, prompts = smollm2
    return [hf_greedy(target.model, prompt.to(DEVICE), 32) for prompt in prompts]


@pytest.mark.parametrize("drafter", ["eagle-smollm2", "tiny-smollm2"])
@pytest.mark.parametrize("policy", ["opt-tree", "eagle2"])
def test_smollm2_steps_sync_only_at_named_reads(smollm2, policy, drafter, monkeypatch):
    target, drafters, prompts = smollm2
    steps = guarded_steps(monkeypatch, cuda_sync_error)
    decode(target.model, drafters[drafter], policy, prompts[0], 32, log=True)
    monkeypatch.undo()
    check_reads(steps, policy, drafter)


@pytest.mark.parametrize("drafter", SHIPPED)
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_smollm2_greedy_tree_decoding_equals_generate_in_fp32(smollm2, smollm2_greedy, policy, drafter):
    target, drafters, prompts = smollm2
    for prompt, reference in zip(prompts, smollm2_greedy):
        assert decode(target.model, drafters[drafter], policy, prompt, 32).token_ids == reference


def _matching_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def half_precision_agreement(dtype: str, policies=("opt-tree", "eagle2", "chain"), tokens: int = 64) -> dict:
    """How often tree decoding (eagle-smollm2) gives plain decoding's tokens in ``dtype``: the share of
    runs equal to the end, and the mean share of tokens before the first difference."""
    from opttree_core import encode_prompt, load_drafter, load_model

    target = load_model("smollm2-135m", device="cuda", dtype=dtype)
    drafter = load_drafter("eagle-smollm2", target)
    equal, prefix, runs = 0, 0.0, 0
    for text in HALF_PROMPTS:
        prompt = encode_prompt(target.tokenizer, text, chat=True).to(DEVICE)
        plain = generate_autoregressive(target.model, prompt, DecodeConfig(max_new_tokens=tokens)).token_ids
        for policy in policies:
            tree = decode(target.model, drafter, policy, prompt, tokens).token_ids
            runs, equal = runs + 1, equal + (tree == plain)
            prefix += _matching_prefix(tree, plain) / max(len(plain), 1)
    return {"dtype": dtype, "runs": runs, "tokens": tokens, "policies": list(policies), "draft": "eagle-smollm2",
            "equal_runs": equal / runs, "mean_matching_prefix": prefix / runs}


def test_half_precision_agreement_is_measured_and_reported(record_property):
    rates = [half_precision_agreement(dtype) for dtype in ("bfloat16", "float16")]
    for rate in rates:
        record_property(f"agreement_{rate['dtype']}", json.dumps(rate))
        print(f"{rate['dtype']}: {rate['equal_runs']:.0%} of {rate['runs']} runs equal plain decoding, "
              f"mean matching prefix {rate['mean_matching_prefix']:.0%}")
        assert rate["runs"] == len(HALF_PROMPTS) * 3 and 0.0 <= rate["equal_runs"] <= 1.0
    if os.environ.get("OPTTREE_CUDA_REPORT"):
        Path(os.environ["OPTTREE_CUDA_REPORT"]).write_text(json.dumps({"half_precision": rates}, indent=1))


@pytest.mark.parametrize("children", ["top-k", "sampled"])
def test_lossless_sampling_chi_square_on_cuda(children):
    """tests/test_sampling.py's end-to-end check on the GPU: the first two tokens of tree sampling and
    of plain sampling come from one distribution (two-sample χ², 1000 runs each)."""
    target = on_cuda(tiny_model(3, vocab_size=8, init_range=0.4))
    drafter = DraftLMDrafter(on_cuda(perturbed_copy(tiny_model(3, vocab_size=8, init_range=0.4), 3, noise=0.3)))
    policy = OptTreePolicy(OptTreeConfig(nodes=4, threshold=0.0, max_depth=3))
    prompt = random_prompt(3, length=4, vocab_size=8).to(DEVICE)
    assert first_two_tokens_pvalue(target, drafter, policy, prompt, runs=1000, children=children) > 1e-3
