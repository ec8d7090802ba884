"""The engine on a GPU, in one prepared run that writes one Markdown table file (README, "On a GPU").

    benchmarks/gpu_check.sh                    # on a GPU machine: the cuda tests, then this driver
    .venv/bin/python benchmarks/gpu_check.py --device cpu --smoke   # tiny models, tiny budgets (CI)

In order, each section timed:
1. the ``cuda`` tests (tests/test_cuda.py): the counts from the JUnit XML that gpu_check.sh's pytest
   run writes (``--tests-xml``), and the bf16/fp16 agreement rates it reports (``--cuda-report``);
2. SmolLM2-135M with the shipped drafts (OPT-Tree n ∈ {8, 16, 32, 64}, opt-tree-auto, EAGLE-2,
   chain) against AR and HF assisted generation, interleaved, on 12 Spec-Bench prompts, through the
   bench harness (``benchmarks/configs/gpu-smollm2.toml``): MAL, tokens/s, speedup, the draft /
   verify / build split per step, whether the outputs equal AR's, and the budget auto picks;
3. verify cost T(n)/T(1) for n up to 512 of a random-weight Llama-2-7B-shaped target in bf16
   (config only, built on the device; timing only);
4. each policy's own host time per tree (``benchmarks/bench_build.py``).

``--smoke`` swaps in tiny random Llamas (target and draft LM saved to the work folder, the tiny
tokenizer's prompts) for SmolLM2 and the 7B shape, and tiny budgets: it checks the script, not a GPU.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_build  # noqa: E402

from opttree_core.atomic import write_atomic  # noqa: E402
from opttree_core.errors import OptTreeError, report_errors  # noqa: E402
from opttree_core.models import load_model, tiny_llama_config, tiny_tokenizer  # noqa: E402
from opttree_core.tools.bench import parse_config, run_bench  # noqa: E402
from opttree_core.machine import device_name  # noqa: E402
from opttree_core.profiling import verify_latencies  # noqa: E402
from opttree_core.treelog import TreeLog  # noqa: E402

CONFIG = HERE / "configs" / "gpu-smollm2.toml"
OUT = HERE / "results" / "gpu-check.md"
VERIFY_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
                 bos_token_id=1, eos_token_id=2)  # meta-llama/Llama-2-7b-hf's shape (config.json)
SMOKE_PROMPTS = "t5 t6 t7 t8 t5 t6\nt20 t21 t9 t20 t21\n"


# --- 1. the cuda tests -------------------------------------------------------------------------

def tests_section(xml: Path | None, report: Path | None, rc: int | None) -> list[str]:
    out = ["## 1. CUDA tests (`pytest -m cuda tests/test_cuda.py`)", ""]
    if xml is None or not xml.is_file():
        return out + ["Not run here (gpu_check.sh runs them first, on a GPU).", ""]
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    out += [f"{passed} passed, {counts['failures']} failed, {counts['errors']} errors, {counts['skipped']} skipped"
            + (f" (pytest exit {rc})" if rc is not None else "") + ".", ""]
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None or c.find("error") is not None]
    out += [f"- failed: `{name}`" for name in failed] + ([""] if failed else [])
    rates = json.loads(report.read_text()).get("half_precision", []) if report is not None and report.is_file() else []
    if rates:
        out += ["Half precision, tree decoding (eagle-smollm2) against plain decoding in the same dtype "
                f"({rates[0]['runs']} runs each: {len(rates[0]['policies'])} policies × prompts, "
                f"{rates[0]['tokens']} tokens):", "", "| dtype | runs equal to AR's | mean matching prefix |",
                "| --- | ---: | ---: |"]
        out += [f"| {r['dtype']} | {r['equal_runs']:.0%} | {r['mean_matching_prefix']:.0%} |" for r in rates] + [""]
    return out


# --- 2. the bench harness ------------------------------------------------------------------------

def smoke_models(work: Path) -> dict:
    """A tiny target and draft LM saved as model folders, and a prompts file, for the smoke run."""
    paths = {}
    for name, layers in (("target", 2), ("draft", 1)):
        loaded = load_model(tiny_llama_config(vocab_size=128, num_hidden_layers=layers, initializer_range=0.5))
        loaded.model.save_pretrained(work / name)
        tiny_tokenizer(128).save_pretrained(work / name)
        paths[name] = str(work / name)
    (work / "prompts.txt").write_text(SMOKE_PROMPTS)
    paths["prompts"] = str(work / "prompts.txt")
    return paths


def bench_config(args, work: Path):
    raw = tomllib.loads(args.config.read_text())
    if args.smoke:
        tiny = smoke_models(work)
        raw.update(target=tiny["target"], drafters=[tiny["draft"]], budgets=[4, 8], max_new_tokens=8, chat=False,
                   device=args.device, datasets=[{"kind": "prompts", "path": tiny["prompts"]}])
    else:
        raw["device"] = args.device
        if args.spec_bench is not None:
            raw["datasets"] = [{**d, "path": str(args.spec_bench)} for d in raw["datasets"]]
    return parse_config(raw, args.config.resolve().parent)


def _auto_budgets(results, run_dir: Path) -> dict[str, str]:
    """Per opt-tree-auto method: the median (and range) of the nodes it verified per step."""
    picked = {}
    for method, rows in results[results["policy"] == "opt-tree-auto"].groupby("method"):
        nodes = [n - 1 for d in rows["log_dir"] for n in TreeLog.load(run_dir / d).steps["n_nodes"]]
        nodes.sort()
        picked[method] = f"{nodes[len(nodes) // 2]} ({nodes[0]}–{nodes[-1]})" if nodes else "–"
    return picked


def _split_ms(row, seconds: float) -> list[str]:
    """Draft, verify, build and the rest, ms per step; dashes where the method has no split (AR)."""
    steps = row.new_tokens / row.mal if row.mal else 0
    split = [getattr(row, c) for c in ("draft_s", "verify_s", "build_s")]
    if any(s is None or s != s for s in split) or not steps:  # None or NaN
        return ["–"] * 4
    return [f"{s / steps * 1e3:.1f}" for s in split] + [f"{(seconds - sum(split)) / steps * 1e3:.1f}"]


def bench_section(args, work: Path) -> list[str]:
    config = bench_config(args, work)
    run_dir = work / "bench"
    shutil.rmtree(run_dir, ignore_errors=True)
    run = run_bench(config, run_dir, progress=not args.smoke)
    results, summary = run.results, run.summary
    matches = results.groupby("method")["output_matches_ar"].agg(lambda s: bool(s.fillna(False).all()))
    auto = _auto_budgets(results, run_dir)
    out = [f"## 2. Decoding: `{config.target}`, interleaved, {results['prompt_id'].nunique()} prompts, "
           f"{config.max_new_tokens} tokens, {config.dtype}, greedy", "",
           "Per step, ms: draft (the drafter's calls), verify (the target's pass and the choice), build (the "
           "policy's own work), other (the loop, logging). auto n*: the nodes opt-tree-auto verified per step, "
           "median (range).", "",
           "| method | MAL | tokens/s | speedup | draft | verify | build | other | = AR | auto n* |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: |"]
    for r in summary.itertuples():
        out.append(f"| {r.method} | {r.mal:.2f} | {r.tokens_per_s:.1f} | {r.speedup:.2f}× | "
                   + " | ".join(_split_ms(r, results[results["method"] == r.method]["seconds"].sum()))
                   + f" | {'yes' if matches.get(r.method) else 'no'} | {auto.get(r.method, '')} |")
    out += [""] + [f"Skipped: {reason}" for reason in run.skipped] + ([""] if run.skipped else [])
    return out


# --- 3. verify cost -----------------------------------------------------------------------------

def llama_target(args):
    """A random-weight Llama-2-7B-shaped model in bf16, built on the device (smoke: a tiny Llama)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    if args.smoke:
        return load_model(tiny_llama_config(max_position_embeddings=1024), device=args.device).model, "tiny Llama"
    config = LlamaConfig(**LLAMA2_7B)
    config._attn_implementation = "sdpa"
    with torch.device(args.device):  # random init on the device: seconds, not minutes on the CPU
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.to(args.device).eval().requires_grad_(False), "Llama-2-7B shape, random weights, bf16"


def verify_section(args) -> list[str]:
    model, label = llama_target(args)
    sizes = VERIFY_SIZES[:7] if args.smoke else VERIFY_SIZES
    seconds, context = verify_latencies(model, sizes, repeats=2 if args.smoke else 5,
                                        context_len=64 if args.smoke else args.context)
    del model
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    out = [f"## 3. Verify cost: {label}, {context} cached tokens, one tree pass (fastest of the repeats)", "",
           "| nodes n | T(n) ms | T(n)/T(1) |", "| ---: | ---: | ---: |"]
    out += [f"| {n} | {s * 1e3:.2f} | {s / seconds[0]:.2f} |" for n, s in zip(sizes, seconds)]
    return out + [""]


# --- 4. build overhead --------------------------------------------------------------------------

def build_section(args) -> list[str]:
    budgets, trees = ((4, 8), 5) if args.smoke else ((8, 16, 32, 64), 50)
    rows = bench_build.build_overheads(args.device, budgets=budgets, trees=trees)
    return ["## 4. Tree building: each policy's own host ms per tree, median (mean drafted nodes)", "",
            f"`benchmarks/bench_build.py`: a table drafter on {args.device}, {trees} trees per cell; the drafter's "
            "own time is left out.", "", bench_build.markdown(rows), ""]


# --- the run ------------------------------------------------------------------------------------

def header(args, seconds: dict[str, float]) -> list[str]:
    device = torch.device(args.device)
    cuda = f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    out = [f"# GPU check: {device_name(device)}", "",
           f"{time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}{cuda}; `{' '.join(sys.argv)}`; "
           + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ".", ""]
    if args.smoke:
        out += ["**Smoke run**: tiny random models and budgets; the numbers say nothing about a GPU.", ""]
    return out


def run(args) -> Path:
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise OptTreeError("--device cuda, but CUDA is not available here: run with --device cpu --smoke")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sections, seconds = [], {}
    for name, make in (("tests", lambda: tests_section(args.tests_xml, args.cuda_report, args.tests_rc)),
                       ("decoding", lambda: bench_section(args, work)), ("verify cost", lambda: verify_section(args)),
                       ("tree building", lambda: build_section(args))):
        start = time.perf_counter()
        sections += make()
        seconds[name] = time.perf_counter() - start
        print(f"gpu_check: {name} done in {seconds[name]:.0f} s", file=sys.stderr)
    text = "\n".join(header(args, seconds) + sections)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(args.out, lambda tmp: tmp.write_text(text))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--smoke", action="store_true", help="tiny models and budgets (runs on a CPU in seconds)")
    p.add_argument("--out", type=Path, default=OUT, help="the Markdown file written")
    p.add_argument("--work", default="out/gpu-check", help="bench run folder, smoke models")
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--spec-bench", type=Path, default=None, help="Spec-Bench question.jsonl (default: the config's)")
    p.add_argument("--context", type=int, default=512, help="cached tokens before the verify-cost tree passes")
    p.add_argument("--tests-xml", type=Path, default=None, help="JUnit XML of the cuda tests (gpu_check.sh)")
    p.add_argument("--cuda-report", type=Path, default=None, help="the cuda tests' OPTTREE_CUDA_REPORT JSON")
    p.add_argument("--tests-rc", type=int, default=None, help="the cuda tests' pytest exit code")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    path = report_errors(run, args)
    if path is None:
        return 2
    print(f"gpu_check: wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
