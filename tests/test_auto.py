"""OPT-Tree auto: the budget it picks against brute force, its stop rule, and the cached profile."""
import itertools
import json

import numpy as np
import pytest
from conftest import ScriptedDrafter, hf_greedy, perturbed_copy, random_prompt

from opttree_core.decoding import DecodeConfig, generate, generate_autoregressive
from opttree_core.drafters import DraftLMDrafter
from opttree_core.errors import OptTreeError
from opttree_core.policies.auto import (DEFAULT_SIZES, AutoChoice, CostRule, OptTreeAutoConfig, OptTreeAutoPolicy, Profile,
                                        expected_child_q)
from opttree_core.policies.registry import make_policy, policy_for_budget
from opttree_core.profiling import cached_profile, calibrate, profile_hardware

SIZES = (1, 2, 4, 8, 16, 32, 64)


def synthetic(verify, layer=0.001, root=0.001) -> Profile:
    """A profile with verify time verify(N) at the measured sizes and a fixed draft cost per layer."""
    return Profile({"synthetic": True}, SIZES, tuple(float(verify(n)) for n in SIZES), root, (layer,) * len(SIZES))


def all_p_hat(drafter: ScriptedDrafter, depth: int) -> list[float]:
    """p̂ of every token path up to ``depth`` (what OPT-Tree's top-n is drawn from)."""
    p_hat = {}
    for d in range(1, depth + 1):
        for path in itertools.product(range(drafter.vocab_size), repeat=d):
            p_hat[path] = p_hat.get(path[:-1], 1.0) * drafter.probs(path[:-1])[path[-1]].item()
    return sorted(p_hat.values(), reverse=True)


def build(profile: Profile, max_nodes: int, max_depth: int, salt: str = "a", sharpness: float = 2.5,
          vocab_size: int = 4):
    drafter = ScriptedDrafter(vocab_size=vocab_size, sharpness=sharpness, salt=salt)
    policy = OptTreeAutoPolicy(OptTreeAutoConfig(max_nodes=max_nodes, max_depth=max_depth), profile=profile)
    tree = policy.build(drafter, 0, 99, "cpu")
    return policy, tree, drafter


class Grown:
    """Records every tree CostRule grows (the whole tree, before ``keep`` cuts it) and each frontier width."""

    def __init__(self, monkeypatch):
        self.p_hat, self.widths = [], []
        keep, frontier = CostRule.keep, CostRule.frontier

        def recording_keep(rule, tree):
            self.p_hat.append(sorted(tree.p_hat[1: tree.size].tolist(), reverse=True))
            return keep(rule, tree)

        def recording_frontier(rule, tree, layer):
            chosen = frontier(rule, tree, layer)
            self.widths.append(chosen.numel())
            return chosen

        monkeypatch.setattr(CostRule, "keep", recording_keep)
        monkeypatch.setattr(CostRule, "frontier", recording_frontier)


@pytest.mark.parametrize("verify", [
    lambda n: 0.05 + 0.004 * n,  # linear
    lambda n: 0.05 + 0.03 * (n > 4) + 0.05 * (n > 16),  # steps
    lambda n: 0.05 + 0.02 * np.sqrt(n),
])
@pytest.mark.parametrize("salt", ["a", "b", "c"])
def test_chosen_budget_maximises_tokens_per_second(verify, salt, monkeypatch):
    grown = Grown(monkeypatch)
    profile = synthetic(verify)
    policy, tree, drafter = build(profile, max_nodes=20, max_depth=3, salt=salt)
    choice = policy.last_choice
    e_sub = np.concatenate([[0.0], np.cumsum(grown.p_hat[-1][:20])])  # the grown tree's top-20
    objective = [(e_sub[n] + 1) / (profile.verify_time(n + 1) + choice.draft_s) for n in range(e_sub.size)]
    assert choice.nodes == int(np.argmax(objective)) and tree.n_nodes == choice.nodes + 1
    assert choice.tokens_per_s == pytest.approx(max(objective), rel=1e-5)
    assert tree.p_hat[1:].sum().item() == pytest.approx(choice.expected, rel=1e-5)
    assert drafter.calls == choice.layers
    assert choice.draft_s == pytest.approx(profile.draft_root_s + (choice.layers - 1) * 0.001)


def test_with_every_layer_nearly_free_the_tree_is_opt_trees():
    """Draft layers that cost nothing: every frontier node is worth expanding, so auto grows exactly
    OPT-Tree's tree (the global top-n of all paths up to its depth) and picks n* from it."""
    profile = synthetic(lambda n: 0.05, layer=1e-9)
    for salt in "abc":
        policy, tree, drafter = build(profile, max_nodes=20, max_depth=3, salt=salt)
        assert policy.last_choice.layers == 3
        kept = sorted(tree.p_hat[1:].tolist(), reverse=True)
        assert kept == pytest.approx(all_p_hat(drafter, 3)[: policy.last_choice.nodes], rel=1e-6)


def test_flat_cost_takes_the_whole_budget_and_depth():
    policy, tree, drafter = build(synthetic(lambda n: 0.1, layer=1e-6), max_nodes=12, max_depth=4)
    assert policy.last_choice.nodes == 12 and tree.n_nodes == 13
    assert policy.last_choice.layers == 4 and drafter.calls == 4


def test_steep_cost_takes_few_nodes_and_stops_growing():
    policy, tree, drafter = build(synthetic(lambda n: 0.01 + 0.05 * n, layer=0.5), max_nodes=12, max_depth=6)
    assert policy.last_choice.nodes <= 2 and tree.n_nodes <= 3
    assert policy.last_choice.layers == 1 and drafter.calls == 1  # another layer costs more than it can bring


def test_cheap_layers_keep_growing_while_they_can_pay():
    """Every layer drafted before the stop was expected to raise the objective."""
    cheap = build(synthetic(lambda n: 0.05 + 0.002 * n, layer=0.0001), max_nodes=16, max_depth=8)[0]
    dear = build(synthetic(lambda n: 0.05 + 0.002 * n, layer=0.02), max_nodes=16, max_depth=8)[0]
    assert cheap.last_choice.layers > dear.last_choice.layers >= 1


def test_layers_that_grow_dear_with_their_width_are_drafted_narrow(monkeypatch):
    """A draft layer's cost rising steeply with its width: auto expands only its best frontier nodes,
    where OPT-Tree expands every frontier node inside its top-n."""
    grown = Grown(monkeypatch)
    wide = synthetic(lambda n: 0.05, layer=0.0001)
    build(wide, max_nodes=16, max_depth=6, sharpness=1.0)
    narrow = Profile({"synthetic": True}, SIZES, (0.05,) * len(SIZES), 0.001, tuple(0.004 * n for n in SIZES))
    wide_widths = grown.widths[:]
    grown.widths.clear()
    build(narrow, max_nodes=16, max_depth=6, sharpness=1.0)
    assert max(wide_widths) > 4 and max(grown.widths) <= 2


def test_expected_gain_not_an_optimistic_bound_decides_the_depth():
    """A flat draft (its best child has q ≈ 0.3): a layer whose expected gain is below its cost is not
    drafted, although a child with q = 1 below each frontier node would have paid for it."""
    policy, _, drafter = build(synthetic(lambda n: 0.05, layer=0.02, root=0.001), max_nodes=8, max_depth=6,
                               sharpness=0.5)
    assert policy.last_choice.layers == 1 and drafter.calls == 1
    q_bar = expected_child_q(np.array([0.3, 0.2, 0.4]), np.array([0, 1, 0]), parents=2)
    assert q_bar == pytest.approx([0.35, 0.1])


def test_profile_interpolates_and_extrapolates():
    profile = synthetic(lambda n: 0.01 * n)
    assert profile.verify_time(3) == pytest.approx(0.03) and profile.verify_time(48) == pytest.approx(0.48)
    assert profile.verify_time(128) == pytest.approx(1.28)  # beyond 64: the last slope
    assert Profile.from_json(json.loads(json.dumps(profile.to_json()))) == profile


def test_history_and_budget_config():
    policy = policy_for_budget("opt-tree-auto", 9)
    assert policy.max_nodes == 9 and policy.config == OptTreeAutoConfig(max_nodes=9)
    policy.use_profile(synthetic(lambda n: 0.05))
    for _ in range(3):
        policy.build(ScriptedDrafter(), 0, 99, "cpu")
    assert len(policy.choices) == 3 and isinstance(policy.last_choice, AutoChoice)
    policy.reset()
    assert policy.choices == [] and policy.last_choice is None
    with pytest.raises(OptTreeError, match="max_nodes"):
        make_policy("opt-tree-auto", max_nodes=0)


def test_missing_or_bad_profile_is_a_one_line_error(tmp_path):
    with pytest.raises(OptTreeError, match="no hardware profile"):
        OptTreeAutoPolicy().build(ScriptedDrafter(), 0, 99, "cpu")
    (tmp_path / "p.json").write_text('{"format": 1, "sizes": [1]}')
    with pytest.raises(OptTreeError, match="malformed hardware profile") as err:
        make_policy("opt-tree-auto", profile=str(tmp_path / "p.json")).build(ScriptedDrafter(), 0, 99, "cpu")
    assert "\n" not in str(err.value)


def test_profile_is_measured_once_then_read_from_the_cache(target, tmp_path, monkeypatch, capsys):
    drafter = DraftLMDrafter(perturbed_copy(target, seed=2, noise=0.3))
    profile, path = cached_profile(target, drafter, sizes=(1, 2, 4), repeats=1, cache_dir=tmp_path)
    assert path.is_file() and path.parent == tmp_path / "profiles"
    assert all(t > 0 for t in profile.verify_s + profile.draft_layer_s) and profile.draft_root_s > 0
    assert profile.key["target"]["hidden_size"] == 64 and profile.key["context_len"] <= 256 - 4

    def must_not_measure(*args, **kwargs):
        raise AssertionError("measured again although the profile is cached")

    monkeypatch.setattr("opttree_core.profiling.profile_hardware", must_not_measure)
    assert cached_profile(target, drafter, sizes=(1, 2, 4), repeats=1, cache_dir=tmp_path) == (profile, path)
    monkeypatch.undo()
    path.write_text("{truncated")  # a corrupt cache file is reported in one line and rebuilt
    again, _ = cached_profile(target, drafter, sizes=(1, 2, 4), repeats=1, cache_dir=tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read the hardware profile" in err[0] and "measuring it again" in err[0]
    assert Profile.from_json(json.loads(path.read_text())) == again


def test_greedy_decoding_through_auto_equals_plain_greedy(target, tmp_path, monkeypatch):
    monkeypatch.setenv("OPTTREE_CACHE", str(tmp_path))
    draft = perturbed_copy(target, seed=3, noise=0.3)
    policy = make_policy("opt-tree-auto", max_nodes=8, max_depth=4, sizes=(1, 2, 4, 8))
    with pytest.raises(OptTreeError, match="no hardware profile"):  # generate never measures
        generate(target, DraftLMDrafter(draft), policy, random_prompt(0), DecodeConfig(max_new_tokens=4))
    assert not (tmp_path / "profiles").exists()
    assert calibrate(policy, target, DraftLMDrafter(draft)) is policy and policy.calibrated
    for seed in range(2):
        prompt = random_prompt(seed)
        result = generate(target, DraftLMDrafter(draft), policy, prompt, DecodeConfig(max_new_tokens=20, stop_at_eos=False))
        assert result.token_ids == hf_greedy(target, prompt, 20)
        assert len(policy.choices) == result.steps and all(0 <= c.nodes <= 8 for c in policy.choices)
    assert len(list((tmp_path / "profiles").glob("*.json"))) == 1  # calibrate measured the profile, once


def test_a_profile_measures_only_the_sizes_the_policy_can_verify():
    assert make_policy("opt-tree-auto", max_nodes=15).profile_sizes() == (1, 2, 4, 8, 16, 17)
    assert make_policy("opt-tree-auto", max_nodes=16).profile_sizes() == (1, 2, 4, 8, 16, 17, 32)
    assert make_policy("opt-tree-auto", max_nodes=500).profile_sizes() == DEFAULT_SIZES


def test_profile_rejects_bad_sizes(target):
    with pytest.raises(OptTreeError, match="increasing"):
        profile_hardware(target, DraftLMDrafter(target), sizes=(4, 2))


class Counting:
    """A drafter wrapper counting draft calls (root_probs and expand)."""

    def __init__(self, drafter):
        self.drafter, self.calls = drafter, 0

    def __getattr__(self, name):
        return getattr(self.drafter, name)

    def root_probs(self):
        self.calls += 1
        return self.drafter.root_probs()

    def expand(self, layer):
        self.calls += 1
        return self.drafter.expand(layer)


def test_when_drafting_cannot_pay_auto_drafts_almost_never_and_stays_exact(target):
    """Verifying any drafted node costs 100 AR steps: n* = 0 at once, then steps with no draft call
    at all (1, 2, 4, 8, 16, 16 … between probes); the drafter catches up lazily and output = greedy."""
    draft = DraftLMDrafter(perturbed_copy(target, seed=4, noise=0.3))
    counting = Counting(draft)
    policy = OptTreeAutoPolicy(OptTreeAutoConfig(max_nodes=8, adapt=False),
                               profile=synthetic(lambda n: 0.01 + 1.0 * (n > 1)))
    prompt, config = random_prompt(5), DecodeConfig(max_new_tokens=40, stop_at_eos=False)
    result = generate(target, counting, policy, prompt, config)
    assert result.token_ids == generate_autoregressive(target, prompt, config).token_ids
    probes = [c for c in policy.choices if not c.skipped]
    assert [i for i, c in enumerate(policy.choices) if not c.skipped] == [0, 2, 5, 10, 19, 36]
    assert counting.calls == len(probes) == 6 and all(c.nodes == 0 for c in policy.choices)
    assert draft.committed + len(draft.pending) == prompt.numel() + len(result.token_ids)


def test_skipped_steps_verify_the_root_as_an_autoregressive_step(target, monkeypatch):
    from opttree_core import verify as verify_module

    def no_tree_mask(*args):
        raise AssertionError("a root-only step built a tree mask")

    policy = OptTreeAutoPolicy(OptTreeAutoConfig(max_nodes=8, adapt=False),
                               profile=synthetic(lambda n: 0.01 + 1.0 * (n > 1)))
    monkeypatch.setattr(verify_module, "tree_attention", no_tree_mask)
    prompt, config = random_prompt(6), DecodeConfig(max_new_tokens=12, stop_at_eos=False)
    result = generate(target, DraftLMDrafter(target), policy, prompt, config)
    assert result.token_ids == generate_autoregressive(target, prompt, config).token_ids and result.mal == 1.0


def test_drafts_that_cost_more_than_they_bring_are_skipped_too(target):
    """n* > 0 but the draft calls make the step slower than AR (a draft layer dearer than 2 AR steps)."""
    policy = OptTreeAutoPolicy(OptTreeAutoConfig(max_nodes=8, adapt=False),
                               profile=synthetic(lambda n: 0.01 + 0.0001 * n, layer=0.02, root=0.02))
    policy.build(ScriptedDrafter(vocab_size=4, sharpness=6.0), 0, 99, "cpu")
    assert policy.last_choice.nodes > 0 and policy.last_choice.tokens_per_s < 1 / 0.0101
    policy.build(ScriptedDrafter(vocab_size=4, sharpness=6.0), 0, 99, "cpu")
    assert policy.last_choice.skipped


def test_auto_drafts_again_as_soon_as_a_probe_pays():
    flat = ScriptedDrafter(vocab_size=64, sharpness=0.0)  # q uniform over 64 tokens: nothing worth verifying
    sharp = ScriptedDrafter(vocab_size=4, sharpness=6.0)
    policy = OptTreeAutoPolicy(OptTreeAutoConfig(max_nodes=8, adapt=False),
                               profile=synthetic(lambda n: 0.05 + 0.01 * n, layer=0.001, root=0.02))
    policy.build(flat, 0, 99, "cpu")
    assert policy.last_choice.nodes == 0 and not policy.last_choice.skipped
    policy.build(flat, 0, 99, "cpu")
    assert policy.last_choice.skipped and flat.calls == 1  # the skipped step asked the drafter nothing
    policy.build(sharp, 0, 99, "cpu")  # the probe: the draft is worth verifying again
    assert policy.last_choice.nodes > 0 and sharp.calls >= 1
    policy.build(sharp, 0, 99, "cpu")
    assert not policy.last_choice.skipped and policy.last_choice.nodes > 0


def test_a_profile_that_disagrees_with_observed_step_times_is_rescaled():
    from opttree_core.records import StepRecord

    def steps(policy, verify_factor, draft_factor, n=8):
        for _ in range(n):
            tree = policy.build(ScriptedDrafter(vocab_size=4, sharpness=3.0), 0, 99, "cpu")
            choice = policy.last_choice
            policy.observe(StepRecord(0, tree, None, None, [1], draft_s=choice.draft_s * draft_factor,
                                      verify_s=choice.verify_s * verify_factor))

    profile = synthetic(lambda n: 0.05 + 0.002 * n, layer=0.004, root=0.004)
    agreeing = OptTreeAutoPolicy(OptTreeAutoConfig(max_nodes=8), profile=profile)
    steps(agreeing, 1.2, 0.9)
    assert agreeing.profile == profile and agreeing.recalibrations == 0
    busy = OptTreeAutoPolicy(OptTreeAutoConfig(max_nodes=8), profile=profile)
    steps(busy, 1.0, 4.0)  # drafting takes 4x what the profile says (measured on an idle machine)
    assert busy.recalibrations == 1
    assert busy.profile.draft_layer_s == pytest.approx(tuple(4 * t for t in profile.draft_layer_s))
    assert busy.profile.verify_s == pytest.approx(profile.verify_s)
    fixed = OptTreeAutoPolicy(OptTreeAutoConfig(max_nodes=8, adapt=False), profile=profile)
    steps(fixed, 3.0, 3.0)
    assert fixed.profile == profile and fixed.recalibrations == 0
