"""Host reads in the decoding hot path, checked on the CPU (``sync_guard.no_host_sync``), so CI sees
what ``tests/test_cuda.py`` checks with CUDA's own sync debug mode on a GPU: a greedy step reads
the host once, at ``verify.choose_greedy`` (``syncs.STEP_READ``), plus only the named per-layer
reads of the policies that decide on the host how to grow (their rule's ``host_reads``) and of the
n-gram table; ``TreeLog.record`` reads nothing; and the guard does catch a sync that creeps in."""
import importlib

import pytest
import torch

from opttree_core.decoding import DecodeConfig, generate
from opttree_core.policies.registry import POLICIES
from opttree_core.syncs import NGRAM_READ, STEP_READ
from opttree_core.treelog import TreeLog
from conftest import hf_greedy, tiny_model
from golden import TINY_PROMPTS, make_policy, tiny_drafters
from sync_guard import HostSync, guarded_steps, no_host_sync

TOKENS = 12
verify = importlib.import_module("opttree_core.verify")  # the module (``opttree_core.verify`` is the function)


@pytest.fixture(scope="module")
def models():
    target = tiny_model(seed=1)
    return target, tiny_drafters(target)


def growth_reads(policy: str) -> tuple[str, ...]:
    return make_policy(policy, 16).host_reads


def allowed_reads(policy: str, drafter: str) -> set[str]:
    return {STEP_READ, *growth_reads(policy), *((NGRAM_READ,) if drafter == "ngram" else ())}


def decode_guarded(models, policy: str, drafter: str, monkeypatch, guard=no_host_sync):
    target, drafters = models
    prompt = torch.tensor(TINY_PROMPTS[0])
    steps = guarded_steps(monkeypatch, guard)
    policy_obj = make_policy(policy, 16)
    log = TreeLog(max_steps=TOKENS, max_nodes=policy_obj.max_nodes + 1)
    result = generate(target, drafters[drafter], policy_obj, prompt, DecodeConfig(max_new_tokens=TOKENS), log=log)
    monkeypatch.undo()
    return result, steps, hf_greedy(target, prompt, TOKENS)


@pytest.mark.parametrize("drafter", ["draft-lm", "eagle", "ngram"])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_a_greedy_step_reads_the_host_only_where_the_code_names_it(models, policy, drafter, monkeypatch):
    result, steps, reference = decode_guarded(models, policy, drafter, monkeypatch)
    assert len(steps) == result.steps >= 1  # every step ran inside the guard
    for reads in steps:
        assert reads.count(STEP_READ) == 1 and set(reads) <= allowed_reads(policy, drafter), reads
    if not growth_reads(policy) and drafter != "ngram":  # static shapes, a model drafter: one read a step
        assert all(reads == [STEP_READ] for reads in steps)
    assert result.token_ids == reference


def _read_a_scalar(tree, target_tokens):
    bool(target_tokens.sum() > 0)


def _index_by_mask(tree, target_tokens):
    tree.tokens[tree.depth > 0]


def _upload_blocking(tree, target_tokens):
    torch.tensor([0, 1], device=tree.device)  # on a GPU: a blocking host-to-device copy


@pytest.mark.parametrize("sync", [_read_a_scalar, _index_by_mask, _upload_blocking])
def test_the_guard_catches_a_sync_that_creeps_into_a_step(models, monkeypatch, sync):
    accept = verify.greedy_accept

    def leaky(tree, target_tokens):
        sync(tree, target_tokens)
        return accept(tree, target_tokens)

    monkeypatch.setattr(verify, "greedy_accept", leaky)
    with pytest.raises(HostSync):
        decode_guarded(models, "chain", "draft-lm", monkeypatch)


def test_tree_log_record_is_guarded_and_reads_nothing(models, monkeypatch):
    """The wrapper asserts that ``record`` made no named read; the guard, that it made no sync."""
    target, drafters = models
    recorded = []
    steps = guarded_steps(monkeypatch, no_host_sync)
    log = TreeLog(max_steps=2, max_nodes=17)  # grows past 2 steps, inside the guard
    generate(target, drafters["eagle"], make_policy("opt-tree", 16), torch.tensor(TINY_PROMPTS[1]),
             DecodeConfig(max_new_tokens=TOKENS, stop_at_eos=False), log=log, on_step=recorded.append)
    monkeypatch.undo()
    assert log.n_steps == len(steps) == len(recorded) > 2
    assert log.nodes["token"][0, : recorded[0].tree.n_nodes].tolist() == recorded[0].tree.tokens.tolist()


@pytest.mark.parametrize("nodes", [4, 16, 64])
@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_every_policy_grows_its_tree_in_buffers_of_one_shape(policy, nodes, monkeypatch):
    """Each rule's ``capacity`` bounds its tree, so the builder never reallocates mid-tree."""
    from opttree_core.grow import TreeBuilder
    from conftest import ScriptedDrafter

    regrown, reserve = [], TreeBuilder._reserve

    def counting(builder, n_new):
        before = builder.capacity
        reserve(builder, n_new)
        regrown.extend([builder.capacity] if builder.capacity != before else [])

    monkeypatch.setattr(TreeBuilder, "_reserve", counting)
    drafter, built = ScriptedDrafter(vocab_size=12, sharpness=1.0), make_policy(policy, nodes)
    for root in range(3):
        drafter.start([root])
        assert built.build(drafter, root, 64, "cpu").n_nodes >= 1
    assert regrown == []


@pytest.mark.parametrize("policy", ["chain", "opt-tree", "eagle2", "sequoia"])
def test_a_published_eagle3_head_reads_the_host_only_where_the_code_names_it(policy, tmp_path, monkeypatch):
    """EAGLE-3 (three layers' features, its own vocabulary with d2t) adds no read of its own."""
    from opttree_core import load_drafter
    from opttree_core.models import load_model
    from published_heads import save_target, write_eagle3

    target = load_model(str(save_target(tmp_path / "target")))
    drafter = load_drafter(str(write_eagle3(tmp_path / "head", target, draft_vocab=40)), target)
    prompt = torch.randint(3, 128, (9,), generator=torch.Generator().manual_seed(0))
    steps = guarded_steps(monkeypatch, no_host_sync)
    result = generate(target.model, drafter, make_policy(policy, 16), prompt, DecodeConfig(max_new_tokens=TOKENS))
    monkeypatch.undo()
    assert len(steps) == result.steps >= 1
    for reads in steps:
        assert reads.count(STEP_READ) == 1 and set(reads) <= allowed_reads(policy, "eagle3"), reads
    assert result.token_ids == hf_greedy(target.model, prompt, TOKENS)
