"""Trained drafts: the EAGLE head and the distilled draft LM, their training, and the shipped weights."""
import json

import pytest
import torch

from opttree_core import load_drafter
from opttree_core.decoding import DecodeConfig, generate
from opttree_core.drafters.draft_lm import build_draft_lm, draft_lm_config
from opttree_core.drafters.eagle import EagleDrafter, EagleHead, head_config
from opttree_core.errors import OptTreeError
from opttree_core.models import LoadedModel, file_sha256, load_model, tiny_llama_config
from opttree_core.policies import OptTreeConfig, OptTreePolicy
from opttree_core.shipped import WEIGHTS_DIR, load_draft, save_draft
from opttree_core.tools.train.data import Sequence
from opttree_core.tools.train.evaluate import heldout_agreement, heldout_mal
from opttree_core.tools.datasets import DEFAULT_SPEC_BENCH
from opttree_core.tools.train.loop import TrainConfig, planned_steps, train
from opttree_core.tools.train.prompts import TOPICS, context_prompts, own_prompts
from opttree_core.tools.train.recipes import DraftLMRecipe, EagleRecipe
from conftest import hf_greedy, random_prompt, tiny_model

POLICY = OptTreePolicy(OptTreeConfig(nodes=10, threshold=0.0, max_depth=4))


@pytest.mark.parametrize("seed", range(4))
def test_eagle_and_draft_lm_decoding_equals_greedy(seed):
    target = tiny_model(seed, layers=3)
    torch.manual_seed(seed)
    drafters = [EagleDrafter(EagleHead(head_config(target.config)), target),
                load_drafter_from(build_draft_lm(target, draft_lm_config(target.config, 1, 64)))]
    prompt = random_prompt(seed)
    expected = hf_greedy(target, prompt, 30)
    for drafter in drafters:
        assert generate(target, drafter, POLICY, prompt, DecodeConfig(max_new_tokens=30)).token_ids == expected


def load_drafter_from(model):
    from opttree_core.drafters import DraftLMDrafter

    return DraftLMDrafter(model)


def greedy_sequences(target, n, length=40, prompt_len=6, first_seed=1000):
    """The target's own greedy continuations: self-distillation data for a tiny model."""
    sequences, features = [], []
    for i in range(n):
        prompt = random_prompt(first_seed + i, length=prompt_len)
        ids = prompt.tolist() + hf_greedy(target, prompt, length)
        with torch.no_grad():
            feats = target.get_decoder()(torch.tensor([ids])).last_hidden_state[0]
        sequences.append(Sequence(ids, prompt_len, "test"))
        features.append(feats)
    return sequences, features


@pytest.fixture(scope="module")
def distill_data():
    """A random *bigram* target (one layer, attention output off), so what a draft learns from 24
    sequences carries over to held-out prompts that training never saw."""
    target = tiny_model(5, layers=1, init_range=0.5)
    target.model.layers[0].self_attn.o_proj.weight.data.zero_()
    target.requires_grad_(False)
    train_seqs, train_feats = greedy_sequences(target, 24)
    held_seqs, held_feats = greedy_sequences(target, 4, first_seed=2000)
    assert not {tuple(s.ids) for s in held_seqs} & {tuple(s.ids) for s in train_seqs}
    return target, train_seqs, train_feats, held_seqs, held_feats


@pytest.mark.parametrize("kind", ["eagle", "draft-lm"])
def test_training_lowers_loss_and_raises_acceptance(distill_data, kind):
    target, train_seqs, train_feats, held_seqs, held_feats = distill_data
    torch.manual_seed(0)
    recipe = EagleRecipe(target) if kind == "eagle" else DraftLMRecipe(target, num_layers=1, intermediate_size=64)
    make = (lambda: EagleDrafter(recipe.model, target)) if kind == "eagle" else (lambda: load_drafter_from(recipe.model))
    before = heldout_agreement(recipe, held_seqs, held_feats)
    mal_before = heldout_mal(target, make, held_seqs[:2], max_new_tokens=24, policy=POLICY)
    history = train(recipe, train_seqs, train_feats, TrainConfig(epochs=12, lr=3e-3, batch_size=4, warmup_steps=5),
                    progress=False)
    after = heldout_agreement(recipe, held_seqs, held_feats)
    mal_after = heldout_mal(target, make, held_seqs[:2], max_new_tokens=24, policy=POLICY)
    first, last = sum(h["loss"] for h in history[:6]) / 6, sum(h["loss"] for h in history[-6:]) / 6
    assert last < 0.7 * first
    assert after["top1"] > before["top1"] + 0.2
    assert mal_after > mal_before


RESUME_CONFIG = TrainConfig(epochs=2, lr=1e-3, batch_size=4, warmup_steps=2)


def train_eagle(distill_data, checkpoint, **overrides):
    """A fresh EAGLE head trained (seeded) on the distillation data with RESUME_CONFIG + overrides:
    (recipe, history)."""
    target, train_seqs, train_feats, _, _ = distill_data
    torch.manual_seed(0)
    recipe = EagleRecipe(target)
    config = TrainConfig(**{**RESUME_CONFIG.__dict__, **overrides})
    return recipe, train(recipe, train_seqs, train_feats, config, checkpoint, progress=False)


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(distill_data, tmp_path):
    def run(max_steps, checkpoint):
        return train_eagle(distill_data, checkpoint, checkpoint_every=3, max_steps=max_steps)[0]

    full = run(None, None).own_state()
    run(7, tmp_path / "ckpt.pt")  # interrupted after 7 of 12 steps (checkpoint at 6 and at 7)
    resumed = run(None, tmp_path / "ckpt.pt").own_state()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0)


@pytest.fixture(scope="module")
def tiny_target():
    return load_model(tiny_llama_config(initializer_range=0.3))


def test_saved_draft_round_trips_and_checks_its_target(tiny_target, tmp_path):
    torch.manual_seed(0)
    recipe = EagleRecipe(tiny_target.model)
    manifest = save_draft(tmp_path / "my-eagle", "eagle", recipe.own_state(), recipe.config, tiny_target.name,
                          tiny_target.model.config, {"note": "test"})
    drafter = load_drafter(str(manifest), tiny_target)
    assert isinstance(drafter, EagleDrafter)
    for key, value in recipe.own_state().items():
        torch.testing.assert_close(drafter.head.state_dict()[key], value.half().float())
    other = LoadedModel(tiny_model(0), None, "other-target")
    with pytest.raises(OptTreeError) as err:
        load_draft(manifest, other)
    assert "was trained for target" in str(err.value) and "\n" not in str(err.value)
    weights = manifest.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(OptTreeError, match="does not match its recorded sha256"):
        load_draft(manifest, tiny_target)


@pytest.mark.parametrize("name", ["eagle-smollm2", "tiny-smollm2"])
def test_shipped_weights_are_small_and_match_their_checksums(name):
    manifest = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    weights = WEIGHTS_DIR / f"{name}.safetensors"
    assert weights.stat().st_size <= 12 * 2**20
    assert file_sha256(weights) == manifest["sha256"]
    assert manifest["target"] == "smollm2-135m" and manifest["target_signature"]["vocab_size"] == 49152


@pytest.mark.parametrize("name", ["eagle-smollm2", "tiny-smollm2"])
def test_shipped_weights_refuse_a_wrong_target(tiny_target, name):
    with pytest.raises(OptTreeError) as err:
        load_drafter(name, tiny_target)
    assert f"'{name}' was trained for target 'smollm2-135m'" in str(err.value) and "\n" not in str(err.value)


def test_wall_clock_guard_stops_cleanly_and_the_rerun_finishes_the_same_schedule(distill_data, tmp_path):
    train_seqs = distill_data[1]

    def run(max_seconds, checkpoint):
        return train_eagle(distill_data, checkpoint, checkpoint_every=100, max_seconds=max_seconds)

    full, _ = run(None, None)
    _, cut = run(0.0, tmp_path / "ckpt.pt")  # the guard is already passed after the first step
    assert [h["step"] for h in cut] == [1] and torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == 1
    resumed, history = run(None, tmp_path / "ckpt.pt")
    assert history[-1]["step"] == planned_steps(len(train_seqs), RESUME_CONFIG) == 12
    assert history[-1]["seconds"] >= cut[-1]["seconds"]  # training time adds up over the calls
    for key, value in full.own_state().items():
        torch.testing.assert_close(resumed.own_state()[key], value, rtol=0, atol=0)


def test_own_prompts_cover_the_mt_bench_styles_over_many_topics_and_skip_spec_bench():
    prompts = own_prompts()
    assert len(TOPICS) == len(set(TOPICS)) >= 150
    styles = {p.source for p in prompts}
    assert {"writing", "roleplay", "reasoning", "stem", "humanities", "code", "foreign"} <= styles
    templated = [p.text for p in prompts if p.source != "reasoning"]  # random puzzles may repeat (11 of 300)
    assert len(set(templated)) == len(templated)
    if DEFAULT_SPEC_BENCH.is_file():
        turns = {t for line in DEFAULT_SPEC_BENCH.read_text().splitlines() if line.strip()
                 for t in json.loads(line)["turns"]}
        assert not turns & {p.text for p in prompts}


def test_context_prompts_wrap_the_targets_own_answers():
    answer = "Volcanoes form where magma rises through the crust. " * 4
    texts = [("explanation", answer), ("foreign", "Les volcans sont des montagnes qui crachent du feu.")]
    prompts = context_prompts(texts, 40, seed=1)
    assert len(prompts) == 40 and sum(p.source == "translation" and "Les volcans" in p.text for p in prompts) == 1
    assert {"summarisation", "qa", "extraction", "rag"} <= {p.source for p in prompts}
    assert all(answer.strip() in p.text or p.source in ("translation", "rag") for p in prompts)
    with pytest.raises(OptTreeError, match="no first-stage answers"):
        context_prompts([("gsm8k", answer)], 5)


def test_a_trained_draft_with_an_infinite_weight_is_refused(tiny_target, tmp_path):
    """Security (issue 26): non-finite weights loaded silently; the manifest's sha256 cannot catch a file
    written that way, so the weights are checked themselves."""
    from safetensors.torch import load_file, save_file

    from opttree_core.models import file_sha256

    recipe = EagleRecipe(tiny_target.model)
    manifest = save_draft(tmp_path / "bad", "eagle", recipe.own_state(), recipe.config, tiny_target.name,
                          tiny_target.model.config, {"note": "test"})
    weights = manifest.with_suffix(".safetensors")
    state = load_file(str(weights))
    key = sorted(k for k in state if state[k].is_floating_point())[0]
    state[key].view(-1)[0] = float("inf")
    save_file(state, str(weights))
    record = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**record, "sha256": file_sha256(weights)}))
    with pytest.raises(OptTreeError, match=f"tensor {key} holds 1 NaN or infinite value"):
        load_drafter(str(manifest), tiny_target)
