"""The command line: a JSON run that writes a log, and bad input that writes nothing."""
import json

import pytest

from opttree_core.tools.cli import main
from opttree_core.models import load_model, tiny_llama_config, tiny_tokenizer
from opttree_core.treelog import TreeLog


def save_tiny(path, vocab_size=128, seed_layers=2):
    loaded = load_model(tiny_llama_config(vocab_size=vocab_size, num_hidden_layers=seed_layers, initializer_range=0.5))
    loaded.model.save_pretrained(path)
    tiny_tokenizer(vocab_size).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"target": save_tiny(root / "target"), "draft": save_tiny(root / "draft", seed_layers=1),
            "other": save_tiny(root / "other", vocab_size=96)}


def run(capsys, *args):
    code = main(["generate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_run_writes_a_log(dirs, tmp_path, capsys):
    log = tmp_path / "run"
    code, out, err = run(capsys, "--target", dirs["target"], "--draft", dirs["draft"], "--nodes", "6",
                         "--max-depth", "3", "--max-new-tokens", "12", "--prompt", "t5 t6 t7", "--log", str(log), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert {"text", "token_ids", "steps", "mal", "tokens_per_s"} <= set(result)
    assert 1 <= len(result["token_ids"]) <= 12 and result["steps"] >= 1
    data = TreeLog.load(log)
    assert data.meta["token_ids"] == result["token_ids"]
    assert data.meta["policy_config"] == {"nodes": 6, "threshold": 0.5, "max_depth": 3}
    assert data.steps["a"].sum() == len(result["token_ids"])
    assert set(data.nodes["token_text"]) <= {f"t{i}" for i in range(128)} | {"<unk>", "<s>", "</s>"}


def test_self_draft_and_chain_policy(dirs, capsys):
    code, out, _ = run(capsys, "--target", dirs["target"], "--draft", "self", "--policy", "chain", "--chain-length", "3",
                       "--max-new-tokens", "9", "--prompt", "t9 t10", "--json")
    assert code == 0 and json.loads(out)["mal"] > 1


@pytest.mark.parametrize("children", ["top-k", "sampled"])
def test_sampling_run_is_reproducible(dirs, capsys, children):
    args = ("--target", dirs["target"], "--draft", dirs["draft"], "--max-new-tokens", "10", "--prompt", "t9 t10",
            "--temperature", "0.9", "--top-p", "0.95", "--seed", "3", "--children", children, "--json")
    first, second = (json.loads(run(capsys, *args)[1])["token_ids"] for _ in range(2))
    assert first == second and len(first) >= 1


BAD = [
    (["--temperature", "-1"], "temperature"),
    (["--nodes", "0"], "node budget"),
    (["--threshold", "1.5"], "threshold"),
    (["--threshold", "-0.2"], "threshold"),
    (["--max-depth", "0"], "max depth"),
    (["--prompt", "   "], "prompt is empty"),
    (["--max-new-tokens", "0"], "max_new_tokens"),
    (["--prompt", "t5 " * 600], "exceeds the model's context of 512"),
    (["--draft", "OTHER"], "do not share a tokenizer"),
    (["--target", "/no/such/dir"], "unknown model"),
]


@pytest.mark.parametrize("extra,needle", BAD)
def test_bad_input_is_one_line_and_writes_no_log(dirs, tmp_path, capsys, extra, needle):
    extra = [dirs["other"] if x == "OTHER" else x for x in extra]
    args = ["--target", dirs["target"], "--draft", dirs["draft"], "--prompt", "t5 t6", "--log", str(tmp_path / "run")]
    args += extra  # argparse keeps the last value of a repeated flag
    code, out, err = run(capsys, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err
    assert not (tmp_path / "run").exists() and list(tmp_path.iterdir()) == []
