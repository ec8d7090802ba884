"""Evaluation prompts: Spec-Bench (MT-Bench + five task categories), read from a path.

Datasets are never bundled: pass the path of Spec-Bench's question.jsonl (the project keeps
one in ../shared/data/spec_bench/). A missing file is a one-line error, never a silent swap.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import OptTreeError

MT_BENCH_CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
SPEC_BENCH_TASKS = ("translation", "summarization", "qa", "math_reasoning", "rag")
# every category as ``spec_bench`` names its prompts' categories
SPEC_BENCH_CATEGORIES = tuple(f"mt_bench/{c}" for c in MT_BENCH_CATEGORIES) + SPEC_BENCH_TASKS
REPO_ROOT = Path(__file__).resolve().parents[2]


def _shared_data() -> Path:
    """The project's datasets: ``../shared/data`` beside the checkout (CI's layout), or ``shared/data``
    inside it where a checkout carries one; the first, which the docs name, when neither exists."""
    beside, inside = REPO_ROOT.parent / "shared" / "data", REPO_ROOT / "shared" / "data"
    return inside if inside.is_dir() and not beside.is_dir() else beside


SHARED_DATA = _shared_data()
DEFAULT_SPEC_BENCH = SHARED_DATA / "spec_bench" / "question.jsonl"
DEFAULT_GSM8K = SHARED_DATA / "gsm8k" / "train.jsonl"


def read_text(path: str | Path) -> str:
    """A dataset file's text (gzip-compressed when it ends in .gz); unreadable or not UTF-8: one line."""
    try:
        if str(path).endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read()
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise OptTreeError(f"dataset {path} is not UTF-8 text: {e.reason} at byte {e.start}") from e
    except (OSError, EOFError) as e:
        raise OptTreeError(f"cannot read dataset {path}: {e}") from e


def json_rows(path: str | Path, kind: str, fields: tuple[str, ...],
              hint: str = 'kind = "prompts" takes plain text') -> list[dict]:
    """The rows of a JSON-lines dataset, each an object with ``fields``; anything else is one line
    naming the file and the line (the bench, ``train data`` and the evaluation prompts all read
    their JSON-lines datasets through it)."""
    rows = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise OptTreeError(f"dataset {path} line {number} is not JSON ({e}): a {kind} dataset is a "
                               f"JSON-lines file ({hint})") from e
        missing = [f for f in fields if not isinstance(row, dict) or f not in row]
        if missing:
            raise OptTreeError(f"dataset {path} line {number} has no '{missing[0]}' field: it is not a {kind} file")
        rows.append(row)
    return rows


@dataclass(frozen=True)
class EvalPrompt:
    id: str
    category: str  # "mt_bench/<category>" or a Spec-Bench task
    text: str  # the first turn


def spec_bench(path: str | Path = DEFAULT_SPEC_BENCH, per_task: int | None = 20, per_category: int | None = None
               ) -> list[EvalPrompt]:
    """MT-Bench first turns (all 80, or the first ``per_category`` of each of its 8 categories) plus
    the first ``per_task`` prompts of each other Spec-Bench task."""
    path = Path(path)
    if not path.is_file():
        raise OptTreeError(f"Spec-Bench file not found: {path} (pass the path of question.jsonl)")
    rows = json_rows(path, "spec_bench", ("question_id", "category", "turns"), hint="Spec-Bench's question.jsonl")
    mt = [r for c in MT_BENCH_CATEGORIES for r in [r for r in rows if r["category"] == c][:per_category]]
    prompts = [EvalPrompt(str(r["question_id"]), f"mt_bench/{r['category']}", r["turns"][0]) for r in mt]
    for task in SPEC_BENCH_TASKS:
        chosen = [r for r in rows if r["category"] == task][:per_task]
        prompts += [EvalPrompt(str(r["question_id"]), task, r["turns"][0]) for r in chosen]
    return prompts
