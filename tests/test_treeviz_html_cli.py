"""`python -m treeviz html`: every run shown, bad input one `error:` line and exit 2 (issue 19,
items 7 and 16), the page written atomically; logs carry the text of every token (issue 18)."""
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from treeviz.__main__ import main
from treeviz.logs import load_log, token_text_map, unique_labels

DATA = Path(__file__).parent / "data" / "treeviz"


def runs_in(page: Path) -> list:
    return json.loads(re.search(r"const RUNS = (.*?);\n", page.read_text(encoding="utf-8")).group(1))


def copy_log(tmp_path: Path, where: str, name: str = "tiny-close-opt-tree-4") -> Path:
    dest = tmp_path / where
    shutil.copytree(DATA / name, dest)
    return dest


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["html", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_two_logs_with_one_directory_name_are_both_shown(tmp_path, capsys):
    a = copy_log(tmp_path, "opt-tree/prompt0")
    b = copy_log(tmp_path, "chain/prompt0", "tiny-close-chain-4")
    code, _, err = run_cli(capsys, a, b, "--out", tmp_path / "page.html")
    assert code == 0, err
    runs = runs_in(tmp_path / "page.html")
    assert len(runs) == 2 and len(runs[1]["steps"]) == len(load_log(b).steps)
    text = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert "opt-tree/prompt0" in text and "chain/prompt0" in text
    assert unique_labels(["x/a", "y/b"]) == ["a", "b"]
    assert unique_labels(["r/x/p", "r/y/p", "q"]) == ["x/p", "y/p", "q"]


def test_the_same_log_twice_is_one_error_line(tmp_path, capsys):
    a = copy_log(tmp_path, "run")
    code, _, err = run_cli(capsys, a, a, "--out", tmp_path / "page.html")
    assert code == 2 and err.startswith("error: the same log is given twice") and err.count("\n") == 1


def _garbage_meta(log: Path):
    (log / "meta.json").write_text("{not json")


def _list_meta(log: Path):
    (log / "meta.json").write_text("[1, 2]")


def _meta_of_wrong_types(log: Path):
    meta = json.loads((log / "meta.json").read_text())
    (log / "meta.json").write_text(json.dumps({**meta, "policy_config": {"nodes": "many"}}))


def _steps_table_as_nodes(log: Path):
    shutil.copy(log / "nodes.parquet", log / "steps.parquet")


def _column_of_wrong_type(log: Path):
    nodes = pd.read_parquet(log / "nodes.parquet")
    nodes["p_hat"] = nodes["p_hat"].astype(str)
    nodes.to_parquet(log / "nodes.parquet")


def _truncated_nodes(log: Path):
    raw = (log / "nodes.parquet").read_bytes()
    (log / "nodes.parquet").write_bytes(raw[: len(raw) // 2])


def _nodes_of_a_missing_step(log: Path):
    nodes = pd.read_parquet(log / "nodes.parquet")
    nodes.loc[nodes["step"] == 0, "step"] = 999
    nodes.to_parquet(log / "nodes.parquet")


BROKEN = {"garbage meta.json": (_garbage_meta, "meta.json is not valid JSON"),
          "a list in meta.json": (_list_meta, "must hold a JSON object"),
          "meta of wrong types": (_meta_of_wrong_types, "policy_config.nodes must be an integer"),
          "wrong schema": (_steps_table_as_nodes, "lacks column(s)"),
          "column of the wrong type": (_column_of_wrong_type, "column p_hat holds"),
          "truncated nodes.parquet": (_truncated_nodes, "is not a readable tree log"),
          "nodes of a step that is not logged": (_nodes_of_a_missing_step, "does not match")}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_log_is_one_error_line_and_leaves_the_page_alone(case, tmp_path, capsys):
    log = copy_log(tmp_path, "run")
    breaks, message = BROKEN[case]
    breaks(log)
    page = tmp_path / "page.html"
    page.write_text("the old page")
    code, out, err = run_cli(capsys, log, "--out", page)
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert page.read_text() == "the old page"


def test_bad_out_paths_are_one_error_line(tmp_path, capsys):
    log = copy_log(tmp_path, "run")
    code, _, err = run_cli(capsys, log, "--out", tmp_path)
    assert code == 2 and "is a directory" in err and err.count("\n") == 1
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli(capsys, log, "--out", tmp_path / "file" / "page.html")
    assert code == 2 and "is a file, not a directory" in err
    code, _, err = run_cli(capsys, tmp_path / "nowhere", "--out", tmp_path / "p.html")
    assert code == 2 and "not a tree log directory" in err


def test_a_failed_write_keeps_the_old_page_and_leaves_no_temporary_file(tmp_path, capsys, monkeypatch):
    log = copy_log(tmp_path, "run")
    page = tmp_path / "page.html"
    page.write_text("the old page")
    real = Path.write_text

    def half_then_full_disk(self, text, *args, **kwargs):
        real(self, text[:1000], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full_disk)
    code, _, err = run_cli(capsys, log, "--out", page)
    monkeypatch.undo()
    assert code == 2 and "No space left on device" in err and err.count("\n") == 1
    assert page.read_text() == "the old page" and sorted(p.name for p in tmp_path.iterdir()) == ["page.html", "run"]
    assert run_cli(capsys, log, "--out", page)[0] == 0 and len(runs_in(page)) == 1


class Letters:
    """A tokenizer stand-in: token t decodes to ``<t>``."""

    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


def test_every_target_token_has_its_text_in_the_log_so_pages_need_no_tokenizer(tmp_path):
    from conftest import perturbed_copy, random_prompt, tiny_model

    from opttree_core import DecodeConfig, DraftLMDrafter, TreeLog, generate, make_policy

    old = load_log(DATA / "tiny-close-opt-tree-12")
    assert "target_text" not in old.nodes.columns and token_text_map(old)  # an old log loads all the same
    target = tiny_model(2)
    log = TreeLog(max_steps=8, max_nodes=7)
    generate(target, DraftLMDrafter(perturbed_copy(target, 2, noise=0.3)), make_policy("opt-tree", nodes=6),
             random_prompt(2), DecodeConfig(max_new_tokens=12, stop_at_eos=False), log=log)
    saved = load_log(log.save(tmp_path / "with-text", tokenizer=Letters()))
    texts = token_text_map(saved)  # no tokenizer here: only what the log holds
    wanted = set(saved.nodes["token"]) | set(saved.nodes["target_token"]) | set(saved.steps["bonus_token"])
    assert {t: texts[t] for t in wanted} == {t: f"<{t}>" for t in wanted}
    assert saved.steps["bonus_text"].tolist() == [f"<{t}>" for t in saved.steps["bonus_token"]]
    rejected = saved.nodes[~saved.nodes["accepted"]]
    assert (rejected["target_text"] == [f"<{t}>" for t in rejected["target_token"]]).all()


@pytest.mark.parametrize("kept", [(), ("target_text",), ("target_text", "bonus_text")])
def test_old_logs_and_logs_with_some_text_columns_load_and_render(tmp_path, capsys, kept):
    """Logs from before the text columns, from main's first target_text (nodes only, no bonus_text)
    and with both: each loads, maps what it holds, and renders a page with every step."""
    from conftest import perturbed_copy, random_prompt, tiny_model

    from opttree_core import DecodeConfig, DraftLMDrafter, TreeLog, generate, make_policy

    target = tiny_model(3)
    log = TreeLog(max_steps=6, max_nodes=7)
    generate(target, DraftLMDrafter(perturbed_copy(target, 3, noise=0.3)), make_policy("opt-tree", nodes=6),
             random_prompt(3), DecodeConfig(max_new_tokens=8, stop_at_eos=False), log=log)
    path = log.save(tmp_path / "log", tokenizer=Letters())
    for name in ("nodes", "steps"):
        frame = pd.read_parquet(path / f"{name}.parquet")
        frame.drop(columns=[c for c in ("target_text", "bonus_text") if c in frame and c not in kept]).to_parquet(
            path / f"{name}.parquet", index=False)
    data = load_log(path)
    texts = token_text_map(data)
    if "target_text" in kept:
        assert all(texts[t] == f"<{t}>" for t in data.nodes["target_token"])
    else:
        assert "target_text" not in data.nodes.columns
    assert all(texts[t] == f"<{t}>" for t in data.nodes["token"])  # token_text in every version
    code, _, err = run_cli(capsys, path, "--out", tmp_path / "page.html")
    assert code == 0, err
    assert len(runs_in(tmp_path / "page.html")[0]["steps"]) == len(data.steps)
