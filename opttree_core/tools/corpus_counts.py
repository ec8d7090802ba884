"""Token counts for a draft vocabulary from a text corpus, without decoding a model.

A trained draft's counts come from its self-distillation data (the target's own answers). An
embedded draft model has no such data; its counts come from a corpus tokenized with the pair's
tokenizer: GSM8K's training split as chats (question, then worked answer, through the chat
template: the chat tokens are counted too) and the Python standard library's source files (code).
Neither is an evaluation set of the bench (Spec-Bench, HumanEval). The counts ship in
``opttree_core/weights`` (``embedded.EmbeddedModel.token_counts``):

    python -m opttree_core.tools.corpus_counts --model qwen2.5-coder-0.5b \\
        --out opttree_core/weights/qwen2.5-coder.token-counts.safetensors
"""
from __future__ import annotations

import argparse
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from ..draft_vocab import count_tokens, save_counts
from ..errors import OptTreeError, report_errors
from .datasets import DEFAULT_GSM8K, json_rows
from .train.prompts import check_gsm8k


def gsm8k_chats(tokenizer, path: str | Path) -> Iterator[list[int]]:
    """Each GSM8K training problem as a chat: the question, then its worked answer."""
    for row in json_rows(path, "gsm8k", ("question", "answer"), hint="GSM8K's train.jsonl: a question and answer a line"):
        chat = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
        yield tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False)


def python_sources(root: Path) -> list[Path]:
    """The standard library's ``.py`` files under ``root`` (sorted; site-packages and tests left out)."""
    return sorted(p for p in root.rglob("*.py")
                  if "site-packages" not in p.parts and "test" not in p.parts and "tests" not in p.parts)


def code_ids(tokenizer, files: list[Path]) -> Iterator[list[int]]:
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # a few stdlib files are not UTF-8 text: skipped, as the count in the meta says
        yield tokenizer(text, add_special_tokens=False)["input_ids"]


def check_sources(gsm8k: str | Path, stdlib: Path) -> None:
    """One line naming a source that is not there or not readable (before a model is loaded)."""
    check_gsm8k(gsm8k)
    if not stdlib.is_dir():
        raise OptTreeError(f"--stdlib {stdlib} is not a directory")


def corpus_counts(tokenizer, vocab_size: int, gsm8k: str | Path, stdlib: Path):
    """(counts (vocab_size,), meta): the tokens of GSM8K's chats and of the stdlib's sources."""
    files = python_sources(stdlib)
    chats = list(gsm8k_chats(tokenizer, gsm8k))  # first: a bad file fails before the long part
    code = list(code_ids(tokenizer, files))
    counts = count_tokens([*chats, *code], vocab_size)
    meta = {"sources": {"gsm8k_train_chats": len(chats), "python_stdlib_files": len(code),
                        "python": sys.version.split()[0]}, "tokens": int(counts.sum())}
    return counts, meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m opttree_core.tools.corpus_counts", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a model whose tokenizer counts (e.g. qwen2.5-coder-0.5b)")
    p.add_argument("--gsm8k", default=str(DEFAULT_GSM8K), help="GSM8K's train.jsonl")
    p.add_argument("--stdlib", default=sysconfig.get_paths()["stdlib"], help="a Python standard library directory")
    p.add_argument("--out", required=True)
    return 0 if report_errors(_count, p.parse_args(argv)) else 2


def _count(args) -> bool:
    from ..models import load_model

    check_sources(args.gsm8k, Path(args.stdlib))
    model = load_model(args.model)
    counts, meta = corpus_counts(model.tokenizer, model.model.config.vocab_size, args.gsm8k, Path(args.stdlib))
    save_counts(Path(args.out), counts, {"tokenizer_of": args.model, **meta})
    print(f"{args.out}: {meta['tokens']:,} tokens counted, {int((counts > 0).sum()):,} distinct ({meta['sources']})")
    return True


if __name__ == "__main__":
    sys.exit(main())
