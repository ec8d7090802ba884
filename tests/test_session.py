"""The one entry point: ``Session`` decodes a prompt into a recorded run in one call, fills the log's
meta from what it holds, calibrates a hardware-aware policy itself, and refuses wrong arguments
(there and in ``generate``) with one line."""
import pytest
import torch

from conftest import ScriptedDrafter, hf_greedy, perturbed_copy, tiny_model
from opttree_core import (
    DecodeConfig,
    DraftLMDrafter,
    LoadedModel,
    OptTreeError,
    Session,
    TreeLog,
    generate,
    generate_autoregressive,
    make_policy,
    read_log,
)
from opttree_core.models import tiny_tokenizer
from opttree_core.policies.auto import Profile

PROMPT = "t5 t9 t20 t7 t33 t41 t12"


@pytest.fixture(scope="module")
def target():
    return LoadedModel(model=tiny_model(2), tokenizer=tiny_tokenizer(64), name="tiny-target")


@pytest.fixture(scope="module")
def drafter(target):
    return DraftLMDrafter(perturbed_copy(target.model, 2, noise=0.1), name="tiny-draft")


def test_a_run_is_one_call_and_equals_plain_greedy(target, drafter, tmp_path):
    session = Session(target, drafter, make_policy("opt-tree", nodes=8, threshold=0.0, max_depth=4))
    run = session.run(PROMPT, max_new_tokens=24, stop_at_eos=False, log_path=tmp_path / "log")
    ids = target.tokenizer(PROMPT, return_tensors="pt")["input_ids"][0]
    assert run.result.token_ids == hf_greedy(target.model, ids, 24)
    assert run.text == target.tokenizer.decode(run.result.token_ids, skip_special_tokens=True)
    saved = read_log(tmp_path / "log")
    assert saved.meta["token_ids"] == run.result.token_ids and len(saved.steps) == run.result.steps
    assert saved.nodes["token_text"].str.len().gt(0).any()  # every token's text is stored


def test_the_meta_comes_from_what_the_session_holds(target, drafter):
    policy = make_policy("chain", length=3)
    meta = Session(target, drafter, policy).run(PROMPT, DecodeConfig(max_new_tokens=6, seed=5)).meta
    assert {k: meta[k] for k in ("target", "draft", "policy", "policy_config", "prompt", "chat", "seed", "device",
                                 "dtype")} == {
        "target": "tiny-target", "draft": "tiny-draft", "policy": "chain", "policy_config": {"length": 3},
        "prompt": PROMPT, "chat": False, "seed": 5, "device": "cpu", "dtype": "float32"}
    assert meta["decode_config"]["max_new_tokens"] == 6 and meta["steps"] >= 2


def test_ids_are_taken_as_they_are_and_named_by_prompt_text(target, drafter):
    session = Session(target, ScriptedDrafter(vocab_size=64), make_policy("chain", length=2))
    run = session.run([5, 9, 20], max_new_tokens=4, prompt_text="three ids", chat=True)
    assert run.meta["prompt_ids"] == [5, 9, 20] and run.meta["prompt"] == "three ids" and run.meta["chat"] is True


def test_new_log_is_sized_for_the_policy_and_fills_while_decoding(target, drafter):
    session = Session(target, drafter, make_policy("opt-tree", nodes=5, max_depth=3))
    log, seen = session.new_log(8), []
    assert log.max_nodes == 6
    session.run(PROMPT, max_new_tokens=8, log=log, on_step=lambda record: seen.append(log.n_steps))
    assert seen == list(range(1, len(seen) + 1)) and seen


def test_a_hardware_aware_policy_is_calibrated_once_before_its_first_decode(target, drafter, monkeypatch):
    measured = []
    profile = Profile({"device": "test"}, (1, 2, 4, 8, 16), (0.01, 0.011, 0.012, 0.014, 0.02), 0.002,
                      (0.002, 0.002, 0.002, 0.003, 0.004))

    def fake_cached(model, drafter_, sizes, *args, **kwargs):
        measured.append(sizes)
        return profile, None

    monkeypatch.setattr("opttree_core.profiling.cached_profile", fake_cached)
    policy = make_policy("opt-tree-auto", max_nodes=8, sizes=(1, 2, 4, 8, 16))
    session = Session(target, drafter, policy)
    assert not policy.calibrated  # nothing is measured before a prompt is known to be valid
    session.run(PROMPT, max_new_tokens=6)
    run = session.run(PROMPT, max_new_tokens=6)
    assert policy.calibrated and len(measured) == 1
    assert run.meta["latency_profile"] == {"device": "test"}  # the log says which costs its trees were built for


@pytest.mark.parametrize("make,needle", [
    (lambda t, d: Session("tiny-target", d, make_policy("chain")), "the target must be a LoadedModel, not str"),
    (lambda t, d: Session(t, "self", make_policy("chain")), "the drafter must be a Drafter, not str"),
    (lambda t, d: Session(t, d, "opt-tree"), "the policy must be a TreePolicy, not str"),
    (lambda t, d: Session(t, d, {"nodes": 4}), "the policy must be a TreePolicy, not dict"),
    (lambda t, d: Session.load("x", "ngram", {"nodes": 4}), "the policy must be a str, not dict"),
    (lambda t, d: Session.load("x", "ngram", make_policy("chain"), nodes=4), "either in the policy object"),
])
def test_wrong_objects_are_one_line(target, drafter, make, needle):
    with pytest.raises(OptTreeError, match=needle):
        make(target, drafter)


@pytest.mark.parametrize("kwargs,needle", [
    ({"config": {"max_new_tokens": 4}}, "config must be a DecodeConfig, not dict"),
    ({"config": DecodeConfig(), "max_new_tokens": 4}, "either in config or as arguments"),
    ({"max_tokens": 4}, "unknown decoding setting 'max_tokens'"),
    ({"log": "out/log"}, "log must be a TreeLog, not str"),
    ({"max_new_tokens": True}, "max_new_tokens must be an integer >= 1"),
])
def test_wrong_run_arguments_are_one_line(target, drafter, kwargs, needle):
    session = Session(target, drafter, make_policy("chain"))
    with pytest.raises(OptTreeError, match=needle):
        session.run(PROMPT, **kwargs)


@pytest.mark.parametrize("prompt,needle", [
    ("t5 t9", "not text: encode it first"),
    ([[2, 34], [5, 6]], r"shape \(L,\), got shape \(2, 2\): batches are not supported"),
    (torch.tensor([[3, 4, 5]]), r"got shape \(1, 3\): batches are not supported"),
    ([3.0, 4.5], "prompt token ids must be integers, got float32"),
    (torch.tensor([3.0, 4.0], dtype=torch.float64), "must be integers, got float64"),
    ([True, False], "must be integers, got bool"),
    ([3, 64], r"must lie in \[0, 64\) for this model, got 3..64"),
    ([-1, 3], r"must lie in \[0, 64\)"),
    ({"ids": [1]}, "the prompt must be token ids .* got dict"),
    ([], "the prompt is empty"),
])
def test_generate_checks_the_prompt_in_one_line(target, drafter, prompt, needle):
    policy = make_policy("chain", length=2)
    with pytest.raises(OptTreeError, match=needle):
        generate(target.model, drafter, policy, prompt, DecodeConfig(max_new_tokens=2))
    with pytest.raises(OptTreeError, match=needle):
        generate_autoregressive(target.model, prompt, DecodeConfig(max_new_tokens=2))


@pytest.mark.parametrize("position,value,needle", [
    (0, "LOADED", "target_model must be the model \\(a LoadedModel's .model\\), not LoadedModel"),
    (2, "opt-tree", "policy must be a TreePolicy .*, not str"),
    (3, {"max_new_tokens": 2}, "config must be a DecodeConfig, not dict"),
    (4, "out/log", "log must be a TreeLog or None, not str"),
])
def test_generate_checks_its_arguments_in_one_line(target, drafter, position, value, needle):
    args = [target.model, drafter, make_policy("chain", length=2), [5, 9], DecodeConfig(max_new_tokens=2), None]
    args[position + (1 if position >= 3 else 0)] = target if value == "LOADED" else value
    with pytest.raises(OptTreeError, match=needle):
        generate(*args)


def test_a_log_passed_to_generate_is_still_a_treelog(target, drafter):
    log = TreeLog(4, 3)
    generate(target.model, drafter, make_policy("chain", length=2), [5, 9], DecodeConfig(max_new_tokens=4), log=log)
    assert log.n_steps >= 1


def test_the_meta_a_run_writes_is_the_schema_records_declares(target, drafter):
    """Every key Session.run writes is declared once, with its JSON type, in records.META_FIELDS (the
    schema treeviz checks logs against); and a hardware-aware run adds only latency_profile."""
    from opttree_core.records import META_FIELDS

    meta = Session(target, drafter, make_policy("chain", length=2)).run(PROMPT, max_new_tokens=4).meta
    assert set(meta) == set(META_FIELDS) - {"latency_profile"}
    for key, value in meta.items():
        assert value is None or isinstance(value, META_FIELDS[key]) or (META_FIELDS[key] is float and
                                                                        isinstance(value, int)), key


def test_regrowing_a_logged_step_from_its_prefix_gives_the_logged_tree_and_another_policy_its_own():
    """``Session.regrow`` (the explorers' like-for-like view): the identical prefix and root."""
    session = Session.load("tiny-random", "self", "opt-tree", nodes=8, threshold=0.0, max_depth=4)
    run = session.run(torch.tensor([5, 9, 20, 7]), max_new_tokens=20, stop_at_eos=False)
    data = run.frames()
    for step in (0, 2, len(data.steps) - 1):
        again = session.regrow(data, step).frames()
        assert again.meta["prompt_ids"] == data.prefix(step) and len(again.steps) == 1
        logged = data.nodes[data.nodes["step"] == step]
        assert again.nodes[["token", "parent", "accepted"]].values.tolist() == logged[["token", "parent", "accepted"]].values.tolist()
    chain = Session(session.target, session.drafter, make_policy("chain", length=3)).regrow(data, 2).frames()
    assert chain.nodes.query("node == 0")["token"].item() == data.nodes.query("step == 2 and node == 0")["token"].item()
    assert chain.steps.iloc[0]["n_nodes"] == 4
    with pytest.raises(OptTreeError, match=r"step must be an integer in \[0, "):
        data.prefix(len(data.steps))
