"""The embedded SmolLM2-135M: tree decoding equals transformers' greedy generate, token for token."""
import pytest
import torch

from opttree_core import encode_prompt, load_drafter
from opttree_core.decoding import DecodeConfig, generate, generate_autoregressive
from opttree_core.draft_vocab import draft_vocab_size
from opttree_core.models import load_model
from opttree_core.policies import ChainConfig, ChainPolicy, OptTreeConfig, OptTreePolicy

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Explain in two sentences why the sky is blue.",
    "A shop sells pencils at 3 for $1. How much do 12 pencils cost? Explain step by step.",
    "Summarise: The mitochondrion is an organelle found in most eukaryotic cells. It generates most of the "
    "cell's supply of adenosine triphosphate, used as a source of chemical energy.",
]


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m")


DRAFTS = ["eagle-smollm2", "tiny-smollm2", "ngram", "self", "eagle-smollm2"]
DRAFT_VOCABS = [None, None, None, None, 0]  # None: the shipped default (8192 tokens); 0: the full vocabulary


@pytest.mark.parametrize("index", range(len(PROMPTS)))
def test_tree_decoding_equals_generate(smollm2, index):
    model, prompt = smollm2.model, encode_prompt(smollm2.tokenizer, PROMPTS[index], chat=True)
    with torch.inference_mode():
        reference = model.generate(prompt[None], attention_mask=torch.ones_like(prompt)[None], max_new_tokens=64,
                                   do_sample=False)[0, prompt.numel():].tolist()
    config = DecodeConfig(max_new_tokens=64)
    policy = OptTreePolicy(OptTreeConfig(nodes=16, threshold=0.0, max_depth=6)) if index % 2 else ChainPolicy(ChainConfig(4))
    drafter = load_drafter(DRAFTS[index], smollm2, draft_vocab=DRAFT_VOCABS[index])
    if DRAFTS[index].endswith("-smollm2"):
        assert draft_vocab_size(drafter) == (8192 if DRAFT_VOCABS[index] is None else None)
    tree = generate(model, drafter, policy, prompt, config)
    assert tree.token_ids == reference
    assert generate_autoregressive(model, prompt, config).token_ids == reference
    assert tree.mal > (1.1 if DRAFTS[index] == "ngram" else 1.2)  # drafts are really accepted


def test_the_demo_runs_auto_and_says_why(tmp_path, monkeypatch, capsys):
    """`make demo` where the Qwen pair cannot run: opt-tree-auto on SmolLM2 with the shipped head,
    calibrated on this machine (a fresh cache here), printing that choice and why; every prompt's
    tokens equal AR's (the demo asserts it)."""
    from opttree_core.tools import demo

    monkeypatch.setenv("OPTTREE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "pair_problem", lambda device: "no room for it")
    assert demo.main(["--out", str(tmp_path / "demo"), "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    assert "target: smollm2-135m (float32) | draft: eagle-smollm2 | the Qwen pair cannot run here (no room " in out
    assert "policy: opt-tree-auto, at most 15 nodes" in out and "latency profile" in out
    assert "exactly the autoregressive tokens" in out and out.count("n* median") == 4
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["chat", "code", "explain", "math"]
