"""A self-distillation mix shaped like the Spec-Bench evaluation (``--mix spec-bench``).

Spec-Bench measures MAL on MT-Bench (chat, with coding) and five tasks: translation (German to
English sentences), summarisation (news articles), QA (short factual questions), math (GSM8K-style
word problems) and RAG (passages followed by a question). This mix gives each of those a share
of the training prompts, from our own templated prompts, GSM8K train and HumanEval, never from
Spec-Bench itself (``tests/test_train_mix.py`` checks that no evaluation prompt appears):

    first stage    chat     the MT-Bench styles of ``prompts.own_prompts`` (writing, roleplay,
                            reasoning, STEM, humanities, chat, explanations)
                   code     our own code prompts and HumanEval, half each
                   math     GSM8K train
                   qa       short factual questions about our topics (``QUESTION_TEMPLATES``)
                   sources  news articles and texts in other languages (mostly German) that the
                            second stage turns into summarisation and translation prompts
    second stage   translation    one or two sentences of the target's own foreign-language text
                   summarisation  two or three of the target's news articles joined into one
                   rag            documents (the target's answers, one of them the answer to a
                                  first-stage question) followed by that question

Every category gets ``per_category`` prompts (the sources half as many each), so
``per_category = 50`` makes 400 prompts (``spec_bench_data`` answers both stages).
"""
from __future__ import annotations

import random
import re

from ...errors import OptTreeError
from ...models import LoadedModel
from .data import Sequence, _encode_chat, self_distill
from .prompts import (HUMANITIES_TOPICS, LIFE_TOPICS, STEM_TOPICS, TOPICS, Prompt, gsm8k_prompts, humaneval_prompts,
                      own_prompts)

CHAT_STYLES = ("writing", "roleplay", "reasoning", "stem", "humanities", "chat", "explanation")
QUESTION_TEMPLATES = [
    "What is {t}?", "who first described {t}?", "When did people start studying {t}?", "why does {t} matter?",
    "Where can you see {t} in everyday life?", "what is the main idea behind {t}?", "How does {t} work in short?",
    "Which country is best known for {t}?", "what is one famous fact about {t}?", "Who uses {t} the most?",
]
HISTORY_QUESTIONS = ["When did {t} begin?", "who was the most important person in {t}?", "Where did {t} take place?",
                     "what caused {t}?", "How did {t} end?"]
NEWS_TEMPLATES = [
    "Write a short news article about a new development in {t}.",
    "Write a newspaper report about a local event involving {t}.",
    "Write a news story, with quotes from an expert, about {t}.",
    "Write a press report about a study on {t}.",
]
FOREIGN_SOURCE_TEMPLATES = ["Write four sentences about {t} in {lang}.", "Describe {t} in a short paragraph in {lang}.",
                            "Write a short news report about {t} in {lang}."]
SOURCE_LANGUAGES = ["German", "German", "German", "French", "Spanish"]  # Spec-Bench translates German
TRANSLATION_TEMPLATES = ["Translate {lang} to English: {s}", "Translate this {lang} text into English: {s}",
                         "Translate into English:\n{s}"]
SUMMARY_TEMPLATES = ["Summarize: {c}", "Summarize the following article in a few sentences.\n\n{c}",
                     "{c}\n\nWrite a short summary of the article above.", "Summarise this news story:\n{c}"]


def question_prompts(n: int, seed: int = 0) -> list[Prompt]:
    """Short factual questions about our topics (Spec-Bench 'qa'-like, our own wording), some in lower case."""
    prompts = [Prompt(t.format(t=topic), "qa") for topic in STEM_TOPICS + LIFE_TOPICS for t in QUESTION_TEMPLATES]
    prompts += [Prompt(t.format(t=topic), "qa") for topic in HUMANITIES_TOPICS for t in HISTORY_QUESTIONS]
    random.Random(seed).shuffle(prompts)
    return prompts[:n]


def source_prompts(n: int, seed: int = 0) -> list[Prompt]:
    """n news-article prompts ('news') and n texts in other languages ('foreign'): contexts for the second stage."""
    rng = random.Random(seed)
    topics = rng.sample(TOPICS, len(TOPICS))
    news = [Prompt(rng.choice(NEWS_TEMPLATES).format(t=t), "news") for t in topics[:n]]
    foreign = [Prompt(rng.choice(FOREIGN_SOURCE_TEMPLATES).format(t=t, lang=rng.choice(SOURCE_LANGUAGES)), "foreign")
               for t in topics[-n:]]
    return news + foreign


def first_stage(per_category: int, gsm8k_path, seed: int = 0) -> list[Prompt]:
    """The mix's first-stage prompts: chat, code, math, qa, and the second stage's sources."""
    if per_category < 2:
        raise OptTreeError(f"--per-category must be at least 2, got {per_category}")
    own = own_prompts(None, seed)
    chat = [p for p in own if p.source in CHAT_STYLES][:per_category]
    code = [p for p in own if p.source == "code"][: per_category - per_category // 2]
    code += humaneval_prompts(per_category // 2)
    prompts = chat + code + gsm8k_prompts(gsm8k_path, per_category) + question_prompts(per_category, seed)
    prompts += source_prompts(per_category // 2, seed)
    random.Random(seed + 1).shuffle(prompts)
    return prompts


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 20]


def second_stage(answers: list[tuple[str, str, str]], per_category: int, seed: int = 0,
                 max_chars: int = 2400) -> list[Prompt]:
    """Translation, summarisation and RAG prompts around the target's own first-stage answers.

    ``answers``: (source, prompt text, answer text) of every first-stage sequence."""
    rng = random.Random(seed)
    foreign = [(re.search(r"in (\w+)\.$", p), a) for s, p, a in answers if s == "foreign"]
    sentences = [(m.group(1) if m else "German", s) for m, a in foreign for s in _sentences(a)]
    news = [a for s, _, a in answers if s == "news" and len(a) > 200]
    questions = [(p, a) for s, p, a in answers if s == "qa" and len(a) > 40]
    documents = [a for s, _, a in answers if s in ("explanation", "stem", "humanities", "chat", "news") and len(a) > 200]
    for name, pool in (("foreign-language answers", sentences), ("news answers", news),
                       ("answered questions", questions), ("explanatory answers", documents)):
        if not pool:
            raise OptTreeError(f"the spec-bench mix's second stage has no {name} to build on: raise --per-category")
    prompts = []
    for _ in range(per_category):
        start = rng.randrange(len(sentences))
        lang, text = sentences[start]
        if rng.random() < 0.4 and start + 1 < len(sentences) and sentences[start + 1][0] == lang:
            text += " " + sentences[start + 1][1]
        prompts.append(Prompt(rng.choice(TRANSLATION_TEMPLATES).format(lang=lang, s=text), "translation"))
    for _ in range(per_category):
        article = " ".join(rng.sample(news, min(len(news), rng.choice((2, 3)))))[:max_chars]
        prompts.append(Prompt(rng.choice(SUMMARY_TEMPLATES).format(c=article), "summarisation"))
    for _ in range(per_category):
        question, answer = rng.choice(questions)
        docs = [answer, *rng.sample(documents, min(len(documents), rng.choice((1, 2, 3))))]
        rng.shuffle(docs)
        prompts.append(Prompt(" ".join(d[: max_chars // len(docs)] for d in docs) + "\n" + question, "rag"))
    rng.shuffle(prompts)
    return prompts


def spec_bench_data(target: LoadedModel, gsm8k_path, per_category: int, data_dir, max_new_tokens: int,
                    batch_size: int, seed: int = 0, progress: bool = True,
                    workers=None) -> tuple[list[Prompt], list[Sequence]]:
    """Both stages' prompts and the target's answers (cached and resumable in ``data_dir``, as ``self_distill``;
    ``workers``: made by Ray workers, ``ray_data.py``)."""
    first, chosen_by = first_stage(per_category, gsm8k_path, seed), {"mix": "spec-bench", "per_category": per_category,
                                                                     "seed": seed}
    sequences = self_distill(target, first, data_dir / "sequences.jsonl", max_new_tokens, batch_size, progress,
                             chosen_by, workers)
    texts = {tuple(_encode_chat(target.tokenizer, p.text)): p.text for p in first}
    if any(tuple(s.ids[: s.n_prompt]) not in texts for s in sequences):
        raise OptTreeError(f"{data_dir / 'sequences.jsonl'} holds answers to other prompts than this mix's "
                           "(another --per-category, --seed or mix): use another --data directory")
    answers = [(s.source, texts[tuple(s.ids[: s.n_prompt])],
                target.tokenizer.decode(s.ids[s.n_prompt:], skip_special_tokens=True)) for s in sequences]
    second = second_stage(answers, per_category, seed)
    sequences = sequences + self_distill(target, second, data_dir / "sequences_mix2.jsonl", max_new_tokens, batch_size,
                                         progress, chosen_by, workers)
    return first + second, sequences
