"""benchmarks/gpu_check.py, the prepared GPU run, in its CPU smoke mode (tiny models, tiny budgets):
every section runs and lands in the one Markdown file; the cuda tests' results are read from
gpu_check.sh's JUnit XML and report; asking for CUDA where there is none is a one-line error."""
import json

import pytest
import torch

from conftest import load_benchmark


@pytest.fixture(scope="module")
def gpu_check():
    return load_benchmark("gpu_check")


def test_smoke_run_writes_every_section_into_one_file(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setenv("OPTTREE_CACHE", str(tmp_path / "cache"))  # opt-tree-auto's profile
    out = tmp_path / "results" / "gpu-check.md"
    assert gpu_check.main(["--device", "cpu", "--smoke", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    text = out.read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert [h.split(" ")[1] for h in headings] == ["1.", "2.", "3.", "4."]
    assert "**Smoke run**" in text and "Not run here" in text
    methods = [line for line in text.splitlines() if line.startswith("| ") and " T=0 |" in line]
    assert len(methods) == 1 + 4 * 2 + 1  # AR, 4 policies × 2 budgets, HF assisted
    assert all("| yes |" in line for line in methods)  # greedy: every output equals AR's
    auto = [line for line in methods if line.startswith("| opt-tree-auto")]
    assert len(auto) == 2 and all(line.rstrip(" |").split("| ")[-1][0].isdigit() for line in auto)
    verify = text.split("## 3.")[1].split("## 4.")[0]
    assert "| 1 | " in verify and verify.count("\n| ") == 2 + 7  # header, rule, n = 1 … 64
    assert text.split("## 4.")[1].count("\n| ") == 2 + 10  # header, rule, every registered policy


def test_the_cuda_tests_section_reads_the_junit_xml_and_the_report(gpu_check, tmp_path):
    xml = tmp_path / "tests.xml"
    xml.write_text('<testsuites><testsuite tests="4" failures="1" errors="0" skipped="1">'
                   '<testcase name="test_a"/><testcase name="test_b"><failure message="x"/></testcase>'
                   '<testcase name="test_c"><skipped/></testcase><testcase name="test_d"/></testsuite></testsuites>')
    report = tmp_path / "report.json"
    rate = {"dtype": "bfloat16", "runs": 12, "tokens": 64, "policies": ["a", "b", "c"], "equal_runs": 0.75,
            "mean_matching_prefix": 0.9}
    report.write_text(json.dumps({"half_precision": [rate]}))
    text = "\n".join(gpu_check.tests_section(xml, report, 1))
    assert "2 passed, 1 failed, 0 errors, 1 skipped (pytest exit 1)" in text and "`test_b`" in text
    assert "| bfloat16 | 75% | 90% |" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is absent")
def test_asking_for_cuda_without_one_is_a_one_line_error(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--device", "cuda", "--out", str(tmp_path / "x.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and not (tmp_path / "x.md").exists()
