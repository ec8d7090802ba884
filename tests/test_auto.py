"""OPT-Tree auto: the budget it picks against brute force, its stop rule, and the cached profile."""
import itertools
import json

import numpy as np
import pytest
from conftest import ScriptedDrafter, hf_greedy, perturbed_copy, random_prompt

from opttree_core.decoding import DecodeConfig, generate
from opttree_core.drafters import DraftLMDrafter
from opttree_core.errors import OptTreeError
from opttree_core.policies.auto import AutoChoice, OptTreeAutoConfig, OptTreeAutoPolicy, Profile
from opttree_core.policies.registry import make_policy, policy_for_budget
from opttree_core.tools.profile import cached_profile, calibrate, profile_hardware

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


def build(profile: Profile, max_nodes: int, max_depth: int, salt: str = "a"):
    drafter = ScriptedDrafter(vocab_size=4, sharpness=2.5, salt=salt)
    policy = OptTreeAutoPolicy(OptTreeAutoConfig(max_nodes=max_nodes, max_depth=max_depth), profile=profile)
    tree = policy.build(drafter, 0, 99, "cpu")
    return policy, tree, drafter


@pytest.mark.parametrize("verify", [
    lambda n: 0.05 + 0.004 * n,  # linear
    lambda n: 0.05 + 0.03 * (n > 4) + 0.05 * (n > 16),  # steps
    lambda n: 0.05 + 0.02 * np.sqrt(n),
])
@pytest.mark.parametrize("salt", ["a", "b", "c"])
def test_chosen_budget_maximises_tokens_per_second(verify, salt):
    profile = synthetic(verify)
    policy, tree, drafter = build(profile, max_nodes=20, max_depth=3, salt=salt)
    choice = policy.last_choice
    top = np.array(all_p_hat(drafter, choice.layers)[:20])  # OPT-Tree's T after that many layers: its top-20
    e_sub = np.concatenate([[0.0], np.cumsum(top)])
    objective = [(e_sub[n] + 1) / (profile.verify_time(n + 1) + choice.draft_s) for n in range(21)]
    assert choice.nodes == int(np.argmax(objective)) and tree.n_nodes == choice.nodes + 1
    assert choice.tokens_per_s == pytest.approx(max(objective), rel=1e-5)
    assert tree.p_hat[1:].sum().item() == pytest.approx(choice.expected, rel=1e-5)
    assert drafter.calls == choice.layers
    assert choice.draft_s == pytest.approx(profile.draft_root_s + (choice.layers - 1) * 0.001)


def test_flat_cost_takes_the_whole_budget_and_depth():
    policy, tree, drafter = build(synthetic(lambda n: 0.1, layer=1e-6), max_nodes=12, max_depth=4)
    assert policy.last_choice.nodes == 12 and tree.n_nodes == 13
    assert policy.last_choice.layers == 4 and drafter.calls == 4


def test_steep_cost_takes_few_nodes_and_stops_growing():
    policy, tree, drafter = build(synthetic(lambda n: 0.01 + 0.05 * n, layer=0.5), max_nodes=12, max_depth=6)
    assert policy.last_choice.nodes <= 2 and tree.n_nodes <= 3
    assert policy.last_choice.layers == 1 and drafter.calls == 1  # another layer costs more than it can bring


def test_cheap_layers_keep_growing_while_they_can_pay():
    """Every layer drafted before the stop could still raise the objective, by the bound auto uses."""
    cheap = build(synthetic(lambda n: 0.05 + 0.002 * n, layer=0.0001), max_nodes=16, max_depth=8)[0]
    dear = build(synthetic(lambda n: 0.05 + 0.002 * n, layer=0.02), max_nodes=16, max_depth=8)[0]
    assert cheap.last_choice.layers > dear.last_choice.layers >= 1


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

    monkeypatch.setattr("opttree_core.tools.profile.profile_hardware", must_not_measure)
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


def test_profile_rejects_bad_sizes(target):
    with pytest.raises(OptTreeError, match="increasing"):
        profile_hardware(target, DraftLMDrafter(target), sizes=(4, 2))
