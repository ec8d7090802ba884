"""Hostile input and faults (issue #19), the tree log, generate, the model cache, drafts and train:
nothing is lost, nothing is silently wrong, every problem is one ``error:`` line.

The bench harness's cases are in ``test_hostile_bench.py``."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from hostile_logs import small_log
from test_cli import save_tiny

from opttree_core import embedded, models
from opttree_core.api import encode_prompt
from opttree_core.errors import OptTreeError
from opttree_core.models import load_model, tiny_llama_config, tiny_tokenizer
from opttree_core.records import read_log, read_log_meta, write_log
from opttree_core.tools import cli
from opttree_core.tools.cli import main
from opttree_core.treelog import TreeLog

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("hostile-models") / "target")


def generate(capsys, target_dir, *args):
    code = main(["generate", "--target", target_dir, "--draft", "ngram", "--nodes", "4", "--max-new-tokens", "6",
                 "--no-progress", "--prompt", "t5 t6 t7", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str, needle: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err, err


@pytest.fixture
def no_model_load(monkeypatch):
    """Problems that must be found before the target loads: loading it fails the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the model was loaded before the problem was reported")

    monkeypatch.setattr("opttree_core.session.load_model", forbidden)


# --- items 1, 2, 19 and the umask: where a log may be written -----------------------------------

def test_log_on_a_directory_of_other_files_is_refused_and_nothing_is_lost(target_dir, tmp_path, capsys, no_model_load):
    (tmp_path / "x" / "sub").mkdir(parents=True)
    (tmp_path / "x" / "thesis.txt").write_text("precious")
    code, _, err = generate(capsys, target_dir, "--log", str(tmp_path / "x"))
    assert code == 2
    one_error_line(err, "exists and is not a tree log")
    assert (tmp_path / "x" / "thesis.txt").read_text() == "precious" and (tmp_path / "x" / "sub").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_log_on_an_existing_file_is_refused(target_dir, tmp_path, capsys, no_model_load):
    (tmp_path / "notes.txt").write_text("keep me")
    code, _, err = generate(capsys, target_dir, "--log", str(tmp_path / "notes.txt"))
    assert code == 2
    one_error_line(err, "exists and is not a tree log")
    assert (tmp_path / "notes.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_saving_over_something_else_is_refused_through_the_api_too(tmp_path):
    data = small_log(1)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.txt").write_text("precious")
    with pytest.raises(OptTreeError, match="exists and is not a tree log"):
        write_log(tmp_path / "home", data)
    assert (tmp_path / "home" / "thesis.txt").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    write_log(tmp_path / "empty", data)  # an empty directory and an earlier log are replaced
    write_log(tmp_path / "empty", small_log(2))
    assert read_log(tmp_path / "empty").meta["marker"] == 2


def test_a_logs_meta_alone_reads_as_in_the_whole_log_and_a_bad_one_is_one_line(tmp_path):
    write_log(tmp_path / "log", small_log(7))
    assert read_log_meta(tmp_path / "log") == read_log(tmp_path / "log").meta
    with pytest.raises(OptTreeError, match="is not a tree log: missing meta.json"):
        read_log_meta(tmp_path / "nowhere")
    (tmp_path / "log" / "meta.json").write_text("[1, 2]")
    with pytest.raises(OptTreeError, match="must hold a JSON object, not a list"):
        read_log_meta(tmp_path / "log")


@pytest.mark.parametrize("where", ["parent-is-a-file", "read-only", "cwd"])
def test_log_destination_problems_are_reported_before_the_model_loads(target_dir, tmp_path, capsys, monkeypatch,
                                                                       no_model_load, where):
    if where == "parent-is-a-file":
        (tmp_path / "file").write_text("x")
        log, needle = tmp_path / "file" / "run", "is not a directory"
    elif where == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only directories")
        (tmp_path / "ro").mkdir(mode=0o555)
        log, needle = tmp_path / "ro" / "run", "is not writable"
    else:
        monkeypatch.chdir(tmp_path)
        log, needle = ".", "is the current directory"
    code, _, err = generate(capsys, target_dir, "--log", str(log))
    assert code == 2
    one_error_line(err, needle)


def test_a_log_that_cannot_be_written_after_decoding_keeps_the_text(target_dir, tmp_path, capsys, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full)
    code, out, err = generate(capsys, target_dir, "--log", str(tmp_path / "run"), "--json")
    assert code == 1
    result = json.loads(out)
    assert len(result["token_ids"]) >= 1 and result["log"] is None
    assert err.count("error: ") == 1 and err.endswith("No space left on device\n") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_log_directories_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_log(tmp_path / "log", small_log(1))
    finally:
        os.umask(old)
    assert (tmp_path / "log").stat().st_mode & 0o777 == 0o755


# --- item 10: concurrent writers, readers, SIGKILL ----------------------------------------------

def child(err: Path, *args) -> subprocess.Popen:
    """A process running ``tests/hostile_logs.py`` with ``args``, its stderr into the file ``err``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    with open(err, "w") as stderr:
        return subprocess.Popen([sys.executable, str(ROOT / "tests" / "hostile_logs.py"), *map(str, args)], env=env,
                                stderr=stderr)


def test_concurrent_writers_and_readers_always_see_one_whole_log(tmp_path):
    path = tmp_path / "out" / "log"
    write_log(path, small_log(0))
    writers = [child(tmp_path / f"writer{w}.err", path, "writer", 40, w + 1) for w in range(3)]
    reads, problems = 0, []
    while any(w.poll() is None for w in writers):
        try:
            data = read_log(path)
        except OptTreeError as err:
            problems.append(str(err))
            continue
        reads += 1
        marker = data.meta["marker"]
        if set(data.nodes["token"]) != {marker} or len(data.steps) != marker % 7 + 1:
            problems.append(f"files of two writes: meta {marker}, nodes {set(data.nodes['token'])}")
    failed = [(tmp_path / f"writer{w}.err").read_text() for w, p in enumerate(writers) if p.wait() != 0]
    assert failed == [] and problems == [] and reads > 0
    assert read_log(path).meta["marker"] % 1000 == 39
    assert sorted(p.name for p in path.parent.iterdir()) == ["log"]  # no lock, temporary or old sibling left


@pytest.mark.parametrize("k", [1, 2])
def test_a_writer_killed_at_any_step_leaves_a_whole_log_and_its_leftovers_are_swept(tmp_path, k):
    path = tmp_path / "out" / "log"
    write_log(path, small_log(1))
    killed = child(tmp_path / "killed.err", path, "killed", k)
    assert killed.wait() == -signal.SIGKILL, (tmp_path / "killed.err").read_text()
    assert read_log(path).meta["marker"] in (1, 2)  # the old log or the new one, whole
    write_log(path, small_log(3))  # the next save sweeps what the killed writer left behind
    assert read_log(path).meta["marker"] == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["log"]


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def test_whole_file_writes_sweep_what_killed_writers_left(tmp_path):
    from opttree_core.atomic import write_atomic

    stale = tmp_path / f".features.pt.tmp-{dead_pid()}"
    stale.write_bytes(b"x" * 1000)  # a write killed half-way
    write_atomic(tmp_path / "features.pt", lambda tmp: tmp.write_text("whole"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.pt"]


# --- item 3 and the stale temp sweep: the model cache -------------------------------------------

def test_same_size_corruption_of_the_model_cache_is_found_and_rebuilt(tmp_path, monkeypatch, capfd):
    original = load_model(tiny_llama_config(vocab_size=128))
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"gguf")
    built = []

    def build(model, parts, cache, source, dtype):  # what build_cache makes, from a tiny model instead of the GGUF
        tmp = embedded.temp_dir(cache)
        embedded.write_cache(tmp, original.model, tiny_tokenizer(128), source)
        embedded.swap_into(tmp, cache)
        built.append(cache)

    monkeypatch.setattr(embedded, "part_paths", lambda model: [gguf])
    monkeypatch.setattr(embedded, "build_cache", build)
    monkeypatch.setenv("OPTTREE_CACHE", str(tmp_path / "cache"))
    load_model("smollm2-135m")
    weights = tmp_path / "cache" / "smollm2-135m" / "model.safetensors"
    with weights.open("r+b") as f:  # flip bytes inside the tensor data: same size, garbage weights
        f.seek(weights.stat().st_size - 64)
        f.write(b"\x7f" * 16)
    stale = tmp_path / "cache" / f".smollm2-135m.tmp-{dead_pid()}-abcd"  # a killed build's leftover
    stale.mkdir()
    capfd.readouterr()
    loaded = load_model("smollm2-135m")
    lines = [line for line in capfd.readouterr().err.splitlines() if line.startswith("opttree:")]
    assert len(built) == 2 and len(lines) == 1 and "sha256" in lines[0] and "rebuilding" in lines[0]
    for key, value in original.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["smollm2-135m"]


# --- items 12, 15, 11 and the finite-number, draft and tokenizer messages -----------------------

@pytest.mark.parametrize("args,needle", [
    (["--nodes", "1000000"], "a node budget of 1000000 needs about"),
    (["--policy", "sequoia", "--nodes", "100000"], "Sequoia's tree of 100000 nodes"),
    (["--temperature", "inf"], "temperature must be a finite number"),
    (["--temperature", "nan"], "temperature must be a finite number"),
    (["--max-time", "inf"], "max_time (seconds) must be a finite number > 0"),
    (["--top-p", "nan"], "top_p must be a number in (0, 1]"),
    (["--prompt", "abc\udcff\udcfe"], "not valid UTF-8 text: byte 0xff at character 3"),
])
def test_bad_values_are_one_line_before_the_model_loads(target_dir, capsys, no_model_load, args, needle):
    code, _, err = generate(capsys, target_dir, *args)
    assert code == 2
    one_error_line(err, needle)


def test_a_budget_that_fits_no_memory_once_the_model_is_known_is_refused_with_the_number(target_dir, capsys,
                                                                                          monkeypatch):
    monkeypatch.setattr("opttree_core.memory.available_bytes", lambda device="cpu": 50 * 2**20)
    code, _, err = generate(capsys, target_dir, "--nodes", "2000")
    assert code == 2
    one_error_line(err, "a node budget of 2000 needs about")
    assert "use at most about" in err and "available on cpu" in err


def test_a_lone_surrogate_through_the_api_is_one_line():
    with pytest.raises(OptTreeError, match="lone surrogate U\\+D800"):
        encode_prompt(tiny_tokenizer(128), "t5 \ud800")


def test_policy_param_nodes_overrides_the_budget(target_dir, tmp_path, capsys):
    code, _, err = generate(capsys, target_dir, "--policy-param", "nodes=3", "--log", str(tmp_path / "run"))
    assert code == 0, err
    assert TreeLog.load(tmp_path / "run").meta["policy_config"]["nodes"] == 3


def test_a_missing_draft_manifest_and_a_target_without_tokenizer_say_what_is_wrong(target_dir, tmp_path, capsys):
    code, _, err = generate(capsys, target_dir, "--draft", str(tmp_path / "missing.json"))
    assert code == 2
    one_error_line(err, "no such trained draft")
    bare = tmp_path / "bare"
    load_model(tiny_llama_config(vocab_size=128)).model.save_pretrained(bare)
    code, _, err = generate(capsys, str(bare))
    assert code == 2
    one_error_line(err, "has no tokenizer, so a text prompt cannot be encoded")
    assert "token ids" not in err


def test_a_mistyped_relative_directory_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(OptTreeError, match="no such directory"):
        load_model("models/my-llama")


def test_an_unreachable_hub_is_one_request_and_one_line(monkeypatch):
    import huggingface_hub

    requests = []

    def unreachable(url, **kwargs):
        requests.append(kwargs)
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("from_pretrained retries for half a minute"))
    with pytest.raises(OptTreeError, match="the Hugging Face hub cannot be reached .* not in the local cache"):
        load_model("some-org/some-model")
    assert requests == [{"retry_on_errors": False}]


def test_ctrl_c_is_one_line_and_exit_130(target_dir, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.Session, "run", interrupted)
    with pytest.raises(SystemExit) as stop:
        generate(capsys, target_dir)
    assert stop.value.code == 130 and capsys.readouterr().err == "interrupted\n"


# --- item 14: draft manifests -------------------------------------------------------------------

@pytest.mark.parametrize("content,needle", [
    ('{"kind": "eagle", "con', "is not valid JSON"),
    ("", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object, not a list"),
    (json.dumps({"kind": "eagle", "config": {}, "target": "t", "target_signature": {"vocab_size": 128}}),
     "lacks the key 'sha256'"),
])
def test_a_broken_draft_manifest_is_one_line_naming_file_and_key(target_dir, tmp_path, capsys, content, needle):
    manifest = tmp_path / "mine.json"
    manifest.write_text(content)
    (tmp_path / "mine.safetensors").write_bytes(b"")
    code, _, err = generate(capsys, target_dir, "--draft", str(manifest))
    assert code == 2
    one_error_line(err, needle)
    assert str(manifest) in err


# --- items 8, 18 and the chat template: train ---------------------------------------------------

@pytest.mark.parametrize("args,needle", [
    (["--holdout", "1.5"], "--holdout"), (["--holdout", "0"], "--holdout"), (["--batch-size", "0"], "--batch-size"),
    (["--epochs", "0"], "--epochs"), (["--max-seconds", "-1"], "--max-seconds"), (["--lr", "nan"], "--lr"),
    (["--name", "a/b"], "plain file name"),
])
def test_train_settings_are_checked_before_anything_is_written(tmp_path, capsys, monkeypatch, args, needle):
    from opttree_core.tools.train import cli as train_cli

    monkeypatch.setattr(train_cli, "load_model", lambda *a, **k: pytest.fail("the target was loaded"))
    monkeypatch.chdir(tmp_path)
    code = train_cli.main(["eagle", "--no-progress", *args])
    assert code == 2
    one_error_line(capsys.readouterr().err, needle)
    assert list(tmp_path.iterdir()) == []


def test_train_names_are_flat_and_a_target_without_chat_template_is_one_line(target_dir, tmp_path, capsys,
                                                                            monkeypatch):
    from opttree_core.tools.train import cli as train_cli

    assert train_cli.safe_name(target_dir) == "target"
    assert train_cli.safe_name("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB--SmolLM2-135M"
    assert train_cli.safe_name("smollm2-135m") == "smollm2-135m"
    monkeypatch.chdir(tmp_path)
    code = train_cli.main(["eagle", "--target", target_dir, "--no-progress", "--device", "cpu"])
    assert code == 2
    one_error_line(capsys.readouterr().err, "has no chat template")
    assert list(tmp_path.iterdir()) == []
