"""Our heads written as published checkpoints (EAGLE-1/2 and EAGLE-3) load back and draft identically."""
import json

import pandas as pd
import pytest
import torch

from opttree_core import load_drafter
from opttree_core.atomic import umask_mode
from opttree_core.decoding import DecodeConfig, generate
from opttree_core.drafters import DraftLMDrafter
from opttree_core.drafters.draft_lm import build_draft_lm, draft_lm_config
from opttree_core.drafters.eagle import EagleDrafter, EagleHead, head_config
from opttree_core.eagle_export import WEIGHT_FORMATS, export_head
from opttree_core.errors import OptTreeError
from opttree_core.models import load_model
from opttree_core.policies import OptTreeConfig, OptTreePolicy
from opttree_core.shipped import save_draft
from opttree_core.tools.cli import main
from opttree_core.treelog import TreeLog
from published_heads import read_state, save_target, write_eagle3

POLICY = OptTreeConfig(nodes=8, threshold=0.0, max_depth=4)


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return load_model(str(save_target(tmp_path_factory.mktemp("target"))))


def our_head(target, seed=0):
    """An EAGLE head as ``train eagle`` makes them: every layer's input norm, an fc bias, the zero first pair."""
    torch.manual_seed(seed)
    head = EagleHead(head_config(target.model.config))
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    return EagleDrafter(head, target.model, name="ours")


def trees(target, drafter, seed=3, tokens=16):
    """Every node of every tree the drafter drafts while decoding a prompt greedily."""
    ids = torch.randint(3, 128, (9,), generator=torch.Generator().manual_seed(seed))
    log = TreeLog(max_steps=tokens, max_nodes=POLICY.nodes + 1)
    generate(target.model, drafter, OptTreePolicy(POLICY), ids, DecodeConfig(max_new_tokens=tokens), log=log)
    return log.to_frames().nodes


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_our_head_round_trips_through_the_eagle1_layout(target, tmp_path, weights):
    drafter = our_head(target)
    out = export_head(drafter, target, tmp_path / "export", dtype="float32", weights=weights)
    config, state = json.loads((out / "config.json").read_text()), read_state(out)
    # the published layout: layer 0 without input norm (an identity layer), ours as layer 1, fc with its bias
    assert config["num_hidden_layers"] == 2 and "bias" not in config and config["opttree_zero_first_pair"] is True
    assert "layers.0.input_layernorm.weight" not in state and "layers.1.input_layernorm.weight" in state
    assert not any(k.startswith(("model.", "lm_head", "norm")) for k in state) and "embed_tokens.weight" in state
    reloaded = load_drafter(str(out), target)
    pd.testing.assert_frame_equal(trees(target, drafter), trees(target, reloaded))
    assert {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()} == {  # another user's engine can read it
        "config.json": umask_mode(), WEIGHT_FORMATS[weights]: umask_mode()}


def test_a_published_eagle3_head_round_trips_with_its_vocabulary_map(target, tmp_path):
    source = write_eagle3(tmp_path / "published", target, draft_vocab=40)
    drafter = load_drafter(str(source), target)
    out = export_head(drafter, target, tmp_path / "export", dtype="float32", weights="bin")
    before, after = read_state(source), read_state(out)
    assert sorted(before) == sorted(k for k in after if k != "embed_tokens.weight")
    assert torch.equal(before["d2t"], after["d2t"]) and torch.equal(before["t2d"], after["t2d"])
    assert json.loads((out / "config.json").read_text())["draft_vocab_size"] == 40
    pd.testing.assert_frame_equal(trees(target, drafter), trees(target, load_drafter(str(out), target)))


def test_export_refuses_what_the_layout_cannot_hold_and_writes_nothing(target, tmp_path):
    draft_lm = DraftLMDrafter(build_draft_lm(target.model, draft_lm_config(target.model.config, 1, 64)))
    with pytest.raises(OptTreeError, match="not an EAGLE head"):
        export_head(draft_lm, target, tmp_path / "lm")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(OptTreeError, match="not an empty directory"):
        export_head(our_head(target), target, busy)
    with pytest.raises(OptTreeError, match="not an empty directory"):
        export_head(our_head(target), target, busy, replace=True)  # replace swaps out checkpoints only
    assert [p.name for p in busy.iterdir()] == ["keep.txt"] and not (tmp_path / "lm").exists()


def test_replace_swaps_an_earlier_checkpoint_for_a_whole_new_one(target, tmp_path):
    out = export_head(our_head(target), target, tmp_path / "head", dtype="float32")
    with pytest.raises(OptTreeError, match="not an empty directory"):
        export_head(our_head(target), target, out)
    export_head(our_head(target), target, out, dtype="float32", weights="bin", replace=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "pytorch_model.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head"]  # no temporary or old sibling left


def test_the_export_command_writes_a_trained_head_and_checks_the_round_trip(target, tmp_path, capsys):
    drafter = our_head(target)
    own = {k: v for k, v in drafter.head.own_state_dict().items()}
    manifest = save_draft(tmp_path / "my-eagle", "eagle", own, drafter.head.config, target.name,
                          target.model.config, {"note": "test"})
    out = tmp_path / "export"
    code = main(["export-head", "--draft", str(manifest), "--target", target.name, "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["layout"] == "eagle" and report["round_trip"]["same_trees"]
    assert report["round_trip"]["max_q_gap"] == 0.0  # the manifest holds fp16 weights, exported as fp16
    assert (out / "model.safetensors").is_file() and any("--speculative-algorithm EAGLE" in u for u in report["usage"])


@pytest.mark.slow
def test_the_shipped_eagle_head_exports_as_an_eagle1_checkpoint(tmp_path, capsys):
    out = tmp_path / "eagle-smollm2"
    code = main(["export-head", "--draft", "eagle-smollm2", "--target", "smollm2-135m", "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["round_trip"]["same_trees"] and report["round_trip"]["max_q_gap"] == 0.0
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 576
    assert all("HuggingFaceTB/SmolLM2-135M-Instruct" in line for line in report["usage"])  # what engines load


@pytest.mark.parametrize("args,needle", [
    (["--out", "."], "--out .: that is the current directory or holds it"),
    (["--out", "{tmp}/file/head"], "cannot write under {tmp}/file (not a directory)"),
    (["--out", "{tmp}/full"], "--out {tmp}/full: exists and is not an empty directory"),
    (["--out", "{tmp}/new", "--prompt", ""], "--prompt is empty"),
    (["--out", "{tmp}/new", "--draft-vocab", "-3"], "--draft-vocab must be an integer >= 0, got -3"),
])
def test_export_head_checks_its_arguments_before_the_target_loads(tmp_path, monkeypatch, capsys, args, needle):
    """Issue 26 item 6 and its weak spots: `--out .` failed with "PosixPath('.') has an empty name" after the
    target loaded; --out under a file, an empty --prompt and a bad --draft-vocab are one line, first."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "thesis.txt").write_text("precious")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("opttree_core.tools.export_head.load_model",
                        lambda *a, **k: pytest.fail("the target loaded before the problem was reported"))
    code = main(["export-head", *[a.format(tmp=tmp_path) for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and needle.format(tmp=tmp_path) in err, err
    assert (tmp_path / "full" / "thesis.txt").read_text() == "precious" and not (tmp_path / "new").exists()


def test_an_unknown_draft_lists_what_a_draft_may_be(target):
    with pytest.raises(OptTreeError, match="unknown draft 'no-such-draft': expected self, ngram, eagle-smollm2"):
        load_drafter("no-such-draft", target)
