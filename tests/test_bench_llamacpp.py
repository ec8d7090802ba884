"""benchmarks/bench_llamacpp.py's pure helpers, on output captured from its llama.cpp programs
(tests/data/llamacpp/): the timing and prompt-id parsers, the generated text, the agreeing prefix,
the commands it runs, and the one line it says when llama.cpp is not built. No build, no model."""
import json
from pathlib import Path

import pytest

from conftest import load_benchmark
from opttree_core.errors import OptTreeError

DATA = Path(__file__).parent / "data" / "llamacpp"


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_llamacpp")


@pytest.fixture(scope="module")
def report(bench):
    import llamacpp_report  # importable once bench_llamacpp has put benchmarks/ on sys.path

    return llamacpp_report


def test_completion_log_gives_prompt_ids_and_both_timings(report):
    parsed = report.parse_completion_log((DATA / "completion.stderr").read_text())
    assert parsed["prompt_ids"] == json.loads((DATA / "prompt_ids.json").read_text())  # ours, from encode_prompt
    assert (parsed["prompt_tokens"], parsed["prompt_s"]) == (39, 2.58387)
    assert (parsed["decode_tokens"], parsed["decode_s"]) == (15, 4.27576)  # 16 new tokens: 15 eval runs


def test_eval_line_is_not_taken_from_the_prompt_eval_line(report):
    log = ("common_perf_print: prompt eval time =     500.00 ms /    10 tokens (   50.00 ms per token,    20.00 "
           "tokens per second)\ncommon_perf_print:        eval time =    2000.00 ms /    15 runs   (  133.33 ms per "
           "token,     7.50 tokens per second)\nmain: number of tokens in prompt = 2\n    42 -> 'a'\n   198 -> '\n'\n")
    parsed = report.parse_completion_log(log)
    assert (parsed["prompt_s"], parsed["prompt_tokens"]) == (0.5, 10)
    assert (parsed["decode_s"], parsed["decode_tokens"]) == (2.0, 15)
    assert parsed["prompt_ids"] == [42, 198]  # a newline piece spans two lines


def test_speculative_log_gives_timings_and_acceptance(report):
    parsed = report.parse_speculative_log((DATA / "speculative.stderr").read_text())
    assert parsed == {"prompt_s": 8.662, "prompt_tokens": 39, "decode_s": 36.817, "decode_tokens": 23,
                      "drafted": 27, "accepted": 19, "target_batches_s": 31.51767, "target_batch_tokens": 71}


def test_a_missing_timing_line_is_one_error(report):
    with pytest.raises(OptTreeError, match="no decoded line"):
        report.parse_speculative_log("encoded   12 tokens in    0.500 seconds, speed:   24.000 t/s\n")
    with pytest.raises(OptTreeError, match="listed 1 of its 2 prompt tokens"):
        report.parse_completion_log("main: number of tokens in prompt = 2\n    42 -> 'a'\n")


def test_generated_text_is_cut_from_what_the_programs_print(report):
    prompt = (DATA / "prompt.txt").read_text()
    ar = report.completion_text((DATA / "completion.stdout").read_text())
    spec = report.speculative_text((DATA / "speculative.stdout").read_text(), prompt)
    assert ar == '```python\ndef reverse_string(s):\n    """\n    Reverses the given'  # 16 tokens
    assert spec == '```python\ndef reverse_string(s):\n    """\n    Reverses the given string.\n\n    Args:\n    s'
    assert report.completion_text("x = 1\n [end of text]\n\n\n") == "x = 1\n"  # stopped at <|im_end|>
    with pytest.raises(OptTreeError, match="did not echo the prompt"):
        report.speculative_text("\n\nsomething else", prompt)


def test_agreeing_prefix_counts_tokens_until_the_first_divergence(report):
    pieces = {1: "def", 2: " f", 3: "(x", 4: "):", 5: "\xe9"}
    decode = lambda ids: "".join(pieces[i] for i in ids)  # noqa: E731
    assert report.agreeing_prefix([1, 2, 3, 4], decode, "def f(x):\n") == 4
    assert report.agreeing_prefix([1, 2, 4, 3], decode, "def f(x):\n") == 2
    assert report.agreeing_prefix([], decode, "def") == 0
    split = {(1,): "a", (1, 2): "a\ufffd", (1, 2, 3): "a\xe9b"}  # a character over two tokens: its first half
    assert report.agreeing_prefix([1, 2, 3], lambda ids: split[tuple(ids)], "a\xe9b!") == 3  # is skipped


def test_commands_are_greedy_on_the_prompt_text_with_the_threads_asked(bench):
    ar = bench.completion_command(Path("bin/llama-completion"), Path("t.gguf"), "<|im_start|>x\n", 64, 2, 4096)
    assert ar[ar.index("-p") + 1] == "<|im_start|>x\n"  # the text as it is: -f would drop its last newline
    assert {"--no-escape", "-no-cnv", "--verbose-prompt", "--no-display-prompt"} <= set(ar)
    assert ar[ar.index("--temp") + 1] == "0" and ar[ar.index("--top-k") + 1] == "1"
    assert ar[ar.index("-n") + 1] == "64" and ar[ar.index("-t") + 1] == "2" and ar[ar.index("-tb") + 1] == "2"
    spec = bench.speculative_command(Path("bin/s"), Path("t.gguf"), Path("d.gguf"), "p", 128, 2, 4096)
    assert spec[spec.index("-md") + 1] == "d.gguf" and spec[spec.index("-td") + 1] == "2"
    assert spec[-4:] == ["--spec-type", "draft-simple", "--spec-draft-n-max", "7"] and "--no-escape" in spec
    assert bench.speculative_command(Path("s"), Path("t"), Path("d"), "p", 8, 1, 512, draft_max=3)[-1] == "3"


def test_build_commands_are_a_niced_native_release_build_of_two_programs(bench, tmp_path):
    configure, build = bench.build_commands(tmp_path / "src", tmp_path / "build")
    assert configure[:3] == ["nice", "-n", "10"] and build[:3] == ["nice", "-n", "10"]
    assert "-DGGML_NATIVE=ON" in configure and "-DCMAKE_BUILD_TYPE=Release" in configure
    assert build[build.index("-j") + 1] == "2"
    assert build[build.index("--target") + 1:] == ["llama-completion", "llama-speculative-simple"]


def test_without_a_build_it_says_how_to_build_in_one_line(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPTTREE_CACHE", str(tmp_path))
    assert bench.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--build" in err and str(tmp_path / f"llama.cpp-{bench.VERSION}") in err
    assert not (tmp_path / "out.json").exists()


def test_prompts_are_chosen_evenly(bench):
    assert bench.choose(list(range(18)), 4) == [0, 6, 11, 17]
    assert bench.choose(list(range(3)), 6) == [0, 1, 2] and bench.choose(list(range(5)), None) == list(range(5))


def _record(prompt_id, ours, ar, spec):
    run = lambda tokens, decode_s, prompt_s: {"decode_tokens": tokens, "decode_s": decode_s,  # noqa: E731
                                              "prompt_s": prompt_s, "prompt_tokens": 10}
    return {"prompt_id": prompt_id, "category": "coding", "prompt_tokens": 10, "our_ar": run(*ours),
            "llama_ar": run(*ar), "llama_spec": {**run(*spec), "drafted": 8, "accepted": 6,
                                                 "target_batches_s": 0.5 + 0.4, "target_batch_tokens": 9 + 8},
            "compare": {"our_tokens": 16, "agree_llama_ar": 5, "agree_llama_spec": 5, "spec_text_equals_ar": True}}


def test_pooled_rates_are_tokens_over_seconds_summed_over_prompts(report):
    records = [_record("a", (16, 4.0, 1.0), (15, 1.0, 0.5), (18, 0.5, 0.5)),
               _record("b", (16, 4.0, 1.0), (15, 2.0, 0.5), (18, 1.0, 0.5))]
    pooled = report.pooled(records)
    assert pooled["our_ar"]["decode_tok_s"] == 32 / 8 and pooled["our_ar"]["end_to_end_tok_s"] == 32 / 10
    assert pooled["llama_ar"]["decode_tok_s"] == 30 / 3
    assert pooled["llama_ar"]["end_to_end_tok_s"] == 32 / 4  # its eval runs + the first token, from the prompt eval
    assert pooled["llama_spec"]["acceptance"] == 12 / 16 and pooled["llama_ar"]["prompt_tok_s"] == 20 / 1.0
    assert pooled["llama_spec"]["verify_ms_per_token"] == pytest.approx(1e3 * 0.8 / 16)  # 8 tokens in 0.4 s, twice
    meta = {"machine": "m", "threads": 2, "started": "s", "finished": "f", "load_start": "1", "load_end": "2",
            "llama_version": "0.3.36", "llama_build": "c", "system_info": "i", "max_new_tokens": 16, "ctx": 4096,
            "command": "python benchmarks/bench_llamacpp.py", "notes": ["a note"]}
    text = report.markdown(meta, records, pooled)
    assert "| llama.cpp AR: Q4_K_M weights | 10.00 | 20.0 | 8.00 | 2.50, 2.81 | 1.00, 1.00 | – |" in text
    assert "at least 50 ms per token of its verification batches" in text and "costs 0.50 AR tokens' time" in text
    assert text.rstrip().endswith("a note") and "| a | coding | 10 | 4.00 | 15.00 | 36.00 | 2.40 | 3.75 | 6/8 |" in text


def test_the_recorded_command_is_shell_quoted_with_notes_elided(bench):
    argv = ["benchmarks/bench_llamacpp.py", "--limit", "5", "--note", "a busy machine's run", "--out", "r/x y"]
    expected = ".venv/bin/python benchmarks/bench_llamacpp.py --limit 5 --note ... --out 'r/x y'"
    assert bench.command_line(argv) == expected
