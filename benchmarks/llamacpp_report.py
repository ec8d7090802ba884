"""What llama.cpp prints, read (``bench_llamacpp.py``'s parsers: pure, tested on captured output),
and the reference row's pooled figures and markdown table."""
from __future__ import annotations

import re
import statistics

from opttree_core.errors import OptTreeError

DRAFT_MAX = 7  # --spec-draft-n-max in llama-speculative-simple's README example (its built-in default is 3)


def draft_settings(draft_max: int = DRAFT_MAX) -> tuple[str, ...]:
    """llama.cpp's draft-model speculation: a draft of up to ``draft_max`` tokens (n_min 0, p_min 0: defaults)."""
    return ("--spec-type", "draft-simple", "--spec-draft-n-max", str(draft_max))


def _number(pattern: str, text: str, what: str, kind=float):
    match = re.search(pattern, text, re.MULTILINE)
    if match is None:
        raise OptTreeError(f"llama.cpp printed no {what} line")
    return tuple(kind(g) for g in match.groups()) if len(match.groups()) > 1 else kind(match.group(1))


def parse_completion_log(log: str) -> dict:
    """llama-completion's stderr: the prompt's token ids (``--verbose-prompt``) and llama_perf's
    prompt-eval and eval lines (eval: one run per generated token after the first)."""
    count = _number(r"number of tokens in prompt = (\d+)", log, "'number of tokens in prompt'", int)
    after = log[re.search(r"number of tokens in prompt = \d+", log).end():]
    ids = [int(m.group(1)) for m in re.finditer(r"^(?:[\d.]+ [A-Z] )?\s*(\d+) -> '", after, re.MULTILINE)][:count]
    if len(ids) != count:
        raise OptTreeError(f"llama.cpp listed {len(ids)} of its {count} prompt tokens")
    prompt_ms, prompt_tokens = _number(r"prompt eval time = +([\d.]+) ms / +(\d+) tokens", log, "prompt eval time")
    eval_ms, runs = _number(r"(?<!prompt) eval time = +([\d.]+) ms / +(\d+) runs", log, "eval time")
    return {"prompt_ids": ids, "prompt_s": prompt_ms / 1e3, "prompt_tokens": int(prompt_tokens),
            "decode_s": eval_ms / 1e3, "decode_tokens": int(runs)}


def parse_speculative_log(log: str) -> dict:
    """llama-speculative-simple's stderr: its encoded/decoded lines, draft counts, and the target's
    ``prompt eval`` line, which counts the prompt and every verification batch together."""
    enc_tokens, enc_s = _number(r"encoded +(\d+) tokens in +([\d.]+) seconds", log, "encoded")
    dec_tokens, dec_s = _number(r"decoded +(\d+) tokens in +([\d.]+) seconds", log, "decoded")
    drafted = _number(r"n_drafted += (\d+)", log, "n_drafted", int)
    accepted = _number(r"n_accept += (\d+)", log, "n_accept", int)
    batch_ms, batch_tokens = _number(r"prompt eval time = +([\d.]+) ms / +(\d+) tokens", log, "target prompt eval")
    return {"prompt_s": enc_s, "prompt_tokens": int(enc_tokens), "decode_s": dec_s, "decode_tokens": int(dec_tokens),
            "drafted": drafted, "accepted": accepted, "target_batches_s": batch_ms / 1e3,
            "target_batch_tokens": int(batch_tokens)}


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def completion_text(stdout: str) -> str:
    """What llama-completion generated (``--no-display-prompt``): it prints the new text, " [end of
    text]" and a newline where it stopped at an end-of-generation token, then two newlines."""
    return ANSI.sub("", stdout).removesuffix("\n\n").removesuffix(" [end of text]\n")


def speculative_text(stdout: str, prompt_text: str) -> str:
    """What llama-speculative-simple generated: it prints two newlines, the prompt's pieces, the new
    text, then two and two newlines more."""
    out = ANSI.sub("", stdout).removeprefix("\n\n")
    if not out.startswith(prompt_text):
        raise OptTreeError("llama-speculative-simple did not echo the prompt it was given first")
    return out[len(prompt_text):].removesuffix("\n\n\n\n")


def agreeing_prefix(ids: list[int], decode, text: str) -> int:
    """How many of ``ids`` decode to a prefix of ``text`` (a prefix ending inside a character is skipped)."""
    agree = 0
    for k in range(1, len(ids) + 1):
        piece = decode(ids[:k])
        if piece.endswith("\ufffd"):
            continue
        if not text.startswith(piece):
            break
        agree = k
    return agree


def rate(run: dict) -> float:
    return run["decode_tokens"] / run["decode_s"]


def pooled(records: list[dict]) -> dict:
    """Decode and end-to-end tokens/s of each engine over all prompts (tokens over seconds, summed),
    and the median over prompts of its per-prompt decode ratio to our AR and to llama.cpp's AR."""
    out = {}
    for key in ("llama_ar", "llama_spec", "our_ar"):
        runs = [r[key] for r in records]
        new = sum(r["decode_tokens"] for r in runs) + (len(runs) if key == "llama_ar" else 0)  # + its first token
        out[key] = {"decode_tok_s": sum(r["decode_tokens"] for r in runs) / sum(r["decode_s"] for r in runs),
                    "end_to_end_tok_s": new / sum(r["prompt_s"] + r["decode_s"] for r in runs),
                    "prompt_tok_s": sum(r.get("prompt_tokens", 0) for r in runs) / sum(r["prompt_s"] for r in runs),
                    "median_x_our_ar": statistics.median(rate(r[key]) / rate(r["our_ar"]) for r in records),
                    "median_x_llama_ar": statistics.median(rate(r[key]) / rate(r["llama_ar"]) for r in records)}
    spec = [r["llama_spec"] for r in records]
    out["llama_spec"]["acceptance"] = sum(r["accepted"] for r in spec) / max(sum(r["drafted"] for r in spec), 1)
    # the target's verification batches alone: its batch time less the encoded line's (which also holds the
    # draft's prompt, so this is a lower bound), over the batch tokens less the prompt's (all but its last)
    out["llama_spec"]["verify_ms_per_token"] = 1e3 * sum(r["target_batches_s"] - r["prompt_s"] for r in spec) / sum(
        r["target_batch_tokens"] - (r["prompt_tokens"] - 1) for r in spec)
    return out


ROWS = (("our_ar", "our AR: PyTorch eager, bf16 (dequantized Q4_K_M), row-count-invariant kernels"),
        ("llama_ar", "llama.cpp AR: Q4_K_M weights"),
        ("llama_spec", "llama.cpp draft-model speculation: + 0.5B Q4_K_M draft"))


def markdown(meta: dict, records: list[dict], summary: dict) -> str:
    ours, ar = summary["our_ar"]["decode_tok_s"], summary["llama_ar"]["decode_tok_s"]
    lines = [f"# llama.cpp beside the Qwen2.5-Coder pair: a reference row ({len(records)} prompts)", "",
             f"Machine: {meta['machine']}; {meta['threads']} thread{'s' * (meta['threads'] != 1)} for each engine; {meta['started']} to "
             f"{meta['finished']} UTC; load average {meta['load_start']} at the start, {meta['load_end']} at the end.",
             f"llama.cpp: `llama-cpp-python=={meta['llama_version']}`'s vendored source (commit "
             f"{meta['llama_build']}); `{meta['system_info']}`.",
             f"Greedy, {meta['max_new_tokens']} new tokens, context {meta['ctx']}; draft settings "
             f"`{' '.join(draft_settings(meta.get('draft_max', DRAFT_MAX)))}` (n_min 0, p_min 0: the defaults).", "",
             "    " + meta["command"], "",
             "Pooled over the prompts (tokens over seconds, summed); the × columns are decode rates, pooled and "
             "the median of the per-prompt ratios:", "",
             "| engine | decode tok/s | prompt tok/s | end-to-end tok/s | × our AR: pooled, median "
             "| × llama.cpp AR: pooled, median | draft acceptance |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, label in ROWS:
        row = summary[key]
        accept = f"{row['acceptance']:.0%}" if "acceptance" in row else "–"
        lines.append(f"| {label} | {row['decode_tok_s']:.2f} | {row['prompt_tok_s']:.1f} "
                     f"| {row['end_to_end_tok_s']:.2f} "
                     f"| {row['decode_tok_s'] / ours:.2f}, {row['median_x_our_ar']:.2f} "
                     f"| {row['decode_tok_s'] / ar:.2f}, {row['median_x_llama_ar']:.2f} | {accept} |")
    verify = summary["llama_spec"]["verify_ms_per_token"]
    lines += ["", f"llama.cpp's target in speculation: at least {verify:.0f} ms per token of its verification batches "
              f"(the prompt's time subtracted), against {1e3 / ar:.0f} ms per token of its AR decode: a verified "
              f"token costs {verify * ar / 1e3:.2f} AR tokens' time."]
    lines += ["", "Per prompt (decode tok/s; agreeing prefix: how many of our AR tokens decode to a prefix of "
              "llama.cpp's text):", "",
              "| prompt | category | prompt tokens | our AR | llama.cpp AR | llama.cpp spec | spec / llama AR "
              "| llama AR / ours | acceptance | agreeing prefix: llama AR, spec | spec text = AR text |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        ours_r, ar_r, spec_r = rate(r["our_ar"]), rate(r["llama_ar"]), rate(r["llama_spec"])
        c, spec = r["compare"], r["llama_spec"]
        lines.append(f"| {r['prompt_id']} | {r['category']} | {r['prompt_tokens']} | {ours_r:.2f} | {ar_r:.2f} "
                     f"| {spec_r:.2f} | {spec_r / ar_r:.2f} | {ar_r / ours_r:.2f} "
                     f"| {spec['accepted']}/{spec['drafted']} "
                     f"| {c['agree_llama_ar']}, {c['agree_llama_spec']} / {c['our_tokens']} "
                     f"| {'yes' if c['spec_text_equals_ar'] else 'no'} |")
    return "\n".join(lines + ["", *meta["notes"]]) + "\n"


NOTES = [
    "What is counted: llama.cpp AR decode = `llama_perf`'s eval line (one forward per generated token after "
    "the first, over their time); speculation decode = `llama-speculative-simple`'s `decoded` line (draft and "
    "target, after the prompt; it may pass N by part of a draft); our AR decode = new tokens over "
    "`generate_autoregressive`'s seconds less its prompt forward (`prefill_target`, timed inside that call). "
    "End-to-end adds the "
    "prompt's forward (the pair bench's tokens/s). Both engines get the same prompt ids: llama.cpp's, printed "
    "by `--verbose-prompt`, are checked equal to ours.",
    "",
    "Where each stands: llama.cpp's rows are a different engine and precision (4-5 bit Q4_K_M weights, "
    "hand-written CPU kernels); ours are PyTorch eager in bf16 with the dequantized weights, the engine the "
    "project's speedups are measured in. A ratio across engines says how far apart the engines are, not how "
    "good tree decoding is; the same-engine ratios are llama.cpp spec / llama.cpp AR here and OPT-Tree / AR "
    "in qwen-pair-reduced.md. Greedy tokens differ between Q4 and bf16 weights: the agreeing prefix says "
    "where.",
]


