"""The Spec-Bench-shaped self-distillation mix: every category, its own prompts only, never Spec-Bench's."""
import json
from collections import Counter

import pytest

from opttree_core.errors import OptTreeError
from opttree_core.tools.datasets import DEFAULT_GSM8K, DEFAULT_SPEC_BENCH
from opttree_core.tools.train.mix import CHAT_STYLES, first_stage, second_stage


@pytest.fixture
def gsm8k(tmp_path):
    """GSM8K train where a checkout has it, else a few questions of the same shape."""
    if DEFAULT_GSM8K.is_file():
        return DEFAULT_GSM8K
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"question": f"Tom has {i} apples and buys {i + 3}. How many now?",
                                        "answer": "#### 0"}) + "\n" for i in range(40)))
    return path


def spec_bench_turns() -> set[str]:
    """Every Spec-Bench turn text (empty when there is no copy here)."""
    if not DEFAULT_SPEC_BENCH.is_file():
        return set()
    return {t for line in DEFAULT_SPEC_BENCH.read_text().splitlines() if line.strip() for t in json.loads(line)["turns"]}


def fake_answers(prompts) -> list[tuple[str, str, str]]:
    """(source, prompt, answer): answers long enough to build on, German sentences for 'foreign' prompts."""
    out = []
    for i, p in enumerate(prompts):
        if p.source == "foreign":
            answer = f"Das ist der erste Satz Nummer {i} über das Thema. Hier kommt ein zweiter langer Satz {i}."
        else:
            answer = f"This is answer {i} to a {p.source} prompt, and it goes on for a while. " * 5
        out.append((p.source, p.text, answer))
    return out


def test_the_mix_has_every_spec_bench_category_and_none_of_its_prompts(gsm8k):
    first = first_stage(10, gsm8k, seed=0)
    by = Counter("chat" if p.source in CHAT_STYLES else p.source for p in first)
    assert by["chat"] == 10 and by["code"] + by["humaneval"] == 10 and by["humaneval"] == 5
    assert by["gsm8k"] == by["qa"] == 10 and by["news"] == by["foreign"] == 5
    second = second_stage(fake_answers(first), 10, seed=0)
    assert Counter(p.source for p in second) == {"translation": 10, "summarisation": 10, "rag": 10}
    news = {a for s, _, a in fake_answers(first) if s == "news"}
    assert all(any(a.strip()[:40] in p.text for a in news) for p in second if p.source == "summarisation")
    assert all("Satz" in p.text and "English" in p.text for p in second if p.source == "translation")
    texts = {p.text for p in first + second}
    assert len(texts) >= 0.9 * len(first + second)
    assert not spec_bench_turns() & texts
    assert [p.text for p in first_stage(10, gsm8k, seed=0)] == [p.text for p in first]  # seeded


def test_the_second_stage_needs_first_stage_answers_to_build_on(gsm8k):
    first = first_stage(4, gsm8k)
    no_foreign = [a for a in fake_answers(first) if a[0] != "foreign"]
    with pytest.raises(OptTreeError, match="no foreign-language answers"):
        second_stage(no_foreign, 4)
    with pytest.raises(OptTreeError, match="--per-category must be at least 2"):
        first_stage(1, gsm8k)


def test_spec_bench_data_answers_both_stages_and_refuses_a_cache_of_other_prompts(gsm8k, tmp_path):
    from opttree_core.models import load_model
    from opttree_core.tools.train.mix import spec_bench_data
    from published_heads import save_target

    target = load_model(str(save_target(tmp_path / "target", layers=2)))
    prompts, sequences = spec_bench_data(target, gsm8k, 2, tmp_path / "data", 64, 8, progress=False)
    assert len(prompts) == len(sequences) == 16
    sources = Counter(s.source for s in sequences)
    assert sources["translation"] == sources["rag"] == sources["summarisation"] == 2
    again = spec_bench_data(target, gsm8k, 2, tmp_path / "data", 64, 8, progress=False)[1]  # from the cache
    assert [s.ids for s in again] == [s.ids for s in sequences]
    with pytest.raises(OptTreeError, match="holds answers to other prompts"):
        spec_bench_data(target, gsm8k, 2, tmp_path / "data", 64, 8, seed=5, progress=False)
