"""``python -m opttree_core train eagle3`` end to end on a tiny target: an EAGLE-3 checkpoint, a learning curve with
a checkpoint per epoch, a model card, a resumable run; and the recipe's resume reaching the same weights."""
import json

import pytest
import torch
from safetensors import safe_open

from opttree_core import load_drafter
from opttree_core.eagle_checkpoints import load_eagle_checkpoint
from opttree_core.models import load_model
from opttree_core.tools.train import cli as train_cli
from opttree_core.tools.train.eagle3 import Eagle3Recipe
from opttree_core.tools.train.loop import TrainConfig, train
from published_heads import save_target
from test_train_eagle3 import LAYERS, distill, small_target

ARGS = ["eagle3", "--n-own", "16", "--n-gsm8k", "0", "--n-humaneval", "0", "--max-new-tokens", "12", "--epochs", "2",
        "--batch-size", "4", "--holdout", "0.25", "--eval-prompts", "1", "--eval-tokens", "8", "--draft-vocab", "40",
        "--ttt-steps", "3", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory):
    return str(save_target(tmp_path_factory.mktemp("train-cli") / "target", layers=8))


def _keys(path) -> set[str]:
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        return set(f.keys())


def test_train_eagle3_writes_a_loadable_checkpoint_a_curve_with_epoch_drafts_and_a_card(target_dir, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    common = [*ARGS, "--target", target_dir, "--out", str(out), "--data", str(tmp_path / "data")]
    assert train_cli.main([*common, "--max-steps", "2"]) == 0  # cut short: the card says so, the rerun resumes
    assert "stopped early" in (out / "MODEL_CARD.md").read_text()
    assert train_cli.main(common) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "eagle3" and card["steps"] == card["planned_steps"] == 6 and "stopped_early" not in card
    head = out / "eagle3-target"
    config = json.loads((head / "config.json").read_text())
    assert config["draft_vocab_size"] == 40 and "eagle_aux_hidden_state_layer_ids" not in config  # 2, 4, 5: defaults
    assert {"d2t", "t2d", "embed_tokens.weight", "fc.weight", "midlayer.hidden_norm.weight"} <= _keys(head)
    target = load_model(target_dir)
    drafter = load_drafter(str(head), target)
    assert drafter.feature_layers == (2, 4, 5) and len(drafter.out.vocab) == 40
    curve = json.loads((out / "learning_curve.json").read_text())
    assert [p["epoch"] for p in curve] == [0, 1, 2] and all("mal" in p and "top1" in p for p in curve)
    for point in curve[1:]:
        epoch_dir = out / point["checkpoint"]
        assert "embed_tokens.weight" not in _keys(epoch_dir)  # the target's table is not copied per epoch
        load_eagle_checkpoint(epoch_dir, target)
    final, last = (load_eagle_checkpoint(d, target).head.state_dict() for d in (head, out / curve[-1]["checkpoint"]))
    assert all(torch.equal(final[k], last[k]) for k in final)  # the last epoch's draft is the final one
    assert "| 2 |" in (out / "MODEL_CARD.md").read_text()


def test_eagle3_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path):
    target = small_target()
    seqs, feats = distill(target, 8, 12, 500)
    config = TrainConfig(epochs=2, lr=1e-2, batch_size=2, warmup_steps=2, checkpoint_every=3)

    def run(max_steps, checkpoint):
        torch.manual_seed(0)
        recipe = Eagle3Recipe(target, draft_ids=torch.arange(4, 60), feature_layers=LAYERS, ttt_steps=3)
        train(recipe, seqs, feats, TrainConfig(**{**config.__dict__, "max_steps": max_steps}), checkpoint, progress=False)
        return recipe.own_state()

    full = run(None, None)
    run(5, tmp_path / "ckpt.pt")
    resumed = run(None, tmp_path / "ckpt.pt")
    assert all(torch.equal(resumed[k], full[k]) for k in full)


@pytest.mark.parametrize("args,needle", [(["--ttt-steps", "0"], "--ttt-steps must be >= 1"),
                                         (["--per-category", "1"], "--per-category must be >= 2"),
                                         (["--layers", "2"], "an EAGLE-3 head has one layer"),
                                         (["--feature-layers", "1", "2"], "--feature-layers lists [1, 2]: an EAGLE-3 "
                                          "head reads three distinct target layers in 0..L - 1"),
                                         (["--feature-layers", "1", "2", "2"], "three distinct"),
                                         (["--feature-layers", "1", "2", "3", "4"], "three distinct"),
                                         (["--feature-layers", "-1", "2", "3"], "three distinct"),
                                         (["--gsm8k", "missing.jsonl"], "GSM8K file not found: missing.jsonl"),
                                         (["--mix", "spec-bench", "--gsm8k", "missing.jsonl"], "GSM8K file not found"),
                                         (["--gsm8k", "{plain}"], "line 1 is not JSON"),
                                         (["--gsm8k", "{other}"], "line 1 has no 'question' field")])
def test_eagle3_settings_are_checked_before_anything_is_written(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.setattr(train_cli, "load_model", lambda *a, **k: pytest.fail("the target was loaded"))
    data = tmp_path.parent / f"{tmp_path.name}-data"
    data.mkdir()
    (data / "plain.txt").write_text("What is 2 + 2?\n")  # issue 26 item 8: a raw JSONDecodeError without the file
    (data / "other.jsonl").write_text('{"text": "no question here"}\n')
    args = [a.format(plain=data / "plain.txt", other=data / "other.jsonl") for a in args]
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(["eagle3", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--data", "--out"])
def test_a_data_or_out_path_that_is_a_file_is_one_line_before_the_target_loads(tmp_path, capsys, monkeypatch, flag):
    monkeypatch.setattr(train_cli, "load_model", lambda *a, **k: pytest.fail("the target was loaded"))
    (tmp_path / "notes.txt").write_text("precious")
    assert train_cli.main(["data", "--no-progress", "--n-gsm8k", "0", flag, str(tmp_path / "notes.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{flag} {tmp_path / 'notes.txt'} exists and is not a directory" in err, err
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_eagle3_feature_layers_past_the_target_are_one_line(target_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["eagle3", "--target", target_dir, "--n-gsm8k", "0", "--no-progress", "--device", "cpu"]
    assert train_cli.main([*args, "--feature-layers", "1", "2", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "three distinct target layers in 0..7 (the target has 8)" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_eagle3_on_a_target_too_shallow_for_the_default_layers_is_one_line(tmp_path, capsys, monkeypatch):
    shallow = str(save_target(tmp_path / "shallow", layers=2))
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(["eagle3", "--target", shallow, "--n-gsm8k", "0", "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pass --feature-layers" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_train_eagle_keeps_each_epochs_draft_as_a_loadable_manifest(target_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [a for a in ARGS if a not in ("--ttt-steps", "3")]
    assert train_cli.main(["eagle", *args[1:], "--target", target_dir, "--out", str(tmp_path / "run")]) == 0
    curve = json.loads((tmp_path / "run" / "learning_curve.json").read_text())
    target = load_model(target_dir)
    for point in curve[1:]:
        drafter = load_drafter(str(tmp_path / "run" / point["checkpoint"] / "eagle-target.json"), target)
        assert drafter.vocab_size == 128
    assert [p["checkpoint"] for p in curve[1:]] == ["epochs/epoch-1", "epochs/epoch-2"]


class _Planted:
    """A pickle that runs code when loaded (what a planted checkpoint.pt could hold)."""

    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


def test_a_planted_checkpoint_is_refused_without_running_it(tmp_path, monkeypatch):
    """Security (issue 26): the trainer resumed with torch.load(..., weights_only=False)."""
    from opttree_core.errors import OptTreeError
    from opttree_core.tools.train.loop import load_checkpoint

    monkeypatch.chdir(tmp_path)
    torch.save({"step": 1, "own_state": {}, "optimizer": {}, "gen_state": torch.zeros(1), "history": [_Planted()]},
               tmp_path / "checkpoint.pt")
    with pytest.raises(OptTreeError, match="is not a training checkpoint this trainer wrote") as err:
        load_checkpoint(tmp_path / "checkpoint.pt")
    assert "\n" not in str(err.value) and not (tmp_path / "PWNED").exists()
