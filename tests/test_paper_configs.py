"""The OPT-Tree paper's GPU setups as bench configs: they state the paper's settings, and they run end to end
when the hub models are replaced by tiny local ones (a draft LM, a published-layout EAGLE-1 head), with
published numbers printed beside ours by bench-table."""
import tomllib
from pathlib import Path

import pytest

from opttree_core.models import load_model
from opttree_core.tools.bench import markdown_table, published_of, run_bench
from opttree_core.tools.bench.config import load_config, parse_config
from opttree_core.tools.cli import main
from opttree_core.errors import OptTreeError
from published_heads import save_target, write_eagle1

CONFIGS = Path(__file__).resolve().parents[1] / "benchmarks" / "configs"
PAPER = {"paper-llama2-68m.toml": "JackFram/llama-68m", "paper-llama2-eagle.toml": "yuhuili/EAGLE-llama2-chat-7B"}


def raw_config(name):
    path = CONFIGS / name
    raw = tomllib.loads(path.read_text())
    dataset = (path.parent / raw["datasets"][0]["path"]).resolve()
    if not dataset.is_file():
        pytest.skip(f"Spec-Bench's question.jsonl is not at {dataset}")
    return raw, path.parent


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configs_state_the_papers_setup(name):
    raw, base = raw_config(name)
    config = load_config(CONFIGS / name)
    assert config.target == "meta-llama/Llama-2-7b-chat-hf" and config.drafters == (PAPER[name],)
    assert (config.policies, config.budgets, config.temperatures) == (("opt-tree",), (60,), (0.0,))
    # the authors' --max_depth 10 keeps at most 9 layers: our max_depth 9 (docs/architecture.md, trap 10)
    assert config.policy_params == {"opt-tree": {"threshold": 0.5, "max_depth": 9}}
    assert "--max_depth 10" in (CONFIGS / name).read_text()
    (mt_bench,) = config.datasets
    assert (mt_bench.kind, mt_bench.mt_bench_per_category, mt_bench.per_category, mt_bench.turns) == \
           ("spec_bench", 10, 0, "all")
    assert (config.device, config.dtype, config.max_new_tokens, config.peers) == ("cuda", "float16", 1024, ("ar",))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    target_dir = save_target(root / "target", layers=2)
    draft_dir = save_target(root / "draft", layers=1, seed=1)  # a draft LM on the same tokenizer
    eagle_dir = write_eagle1(root / "eagle", load_model(str(target_dir)))
    return {"target": str(target_dir), "JackFram/llama-68m": str(draft_dir), "yuhuili/EAGLE-llama2-chat-7B": str(eagle_dir)}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_configs_run_with_tiny_local_models_and_show_published_numbers(name, tiny, tmp_path, capsys):
    raw, base = raw_config(name)
    draft = tiny[PAPER[name]]
    # the same config with the hub models replaced by tiny local ones, on the CPU, short answers, one question
    raw |= {"target": tiny["target"], "drafters": [draft], "device": "cpu", "dtype": "float32", "max_new_tokens": 6,
            "published": [{"source": "a test", "drafter": draft, "policy": "opt-tree", "budget": 60,
                           "temperature": 0.0, "mal": 2.5, "speedup": 1.5}]}
    raw["datasets"][0]["limit"] = 2  # the first MT-Bench question, both turns
    result = run_bench(parse_config(raw, base), tmp_path / "run", progress=False)
    trees = result.results[result.results["kind"] == "tree"]
    assert len(trees) == 2 and trees["output_matches_ar"].all()
    assert {p.rsplit("-", 1)[-1] for p in trees["prompt_id"]} == {"81", "turn2"}
    table = markdown_table(result.summary, published_of(tmp_path / "run"))
    ours = result.summary[result.summary["kind"] == "tree"].iloc[0]
    assert f"| {ours.mal:.2f} / {ours.speedup:.2f}× | 2.50 / 1.50× | a test |" in table
    assert main(["bench-table", str(tmp_path / "run")]) == 0
    assert "2.50 / 1.50×" in capsys.readouterr().out


@pytest.mark.parametrize("row, needle", [
    ({"source": "x", "drafter": "nope", "policy": "opt-tree", "budget": 60, "temperature": 0.0, "mal": 2.0}, "drafter"),
    ({"source": "x", "drafter": "d", "policy": "opt-tree", "budget": 8, "temperature": 0.0, "mal": 2.0}, "budget"),
    ({"drafter": "d", "policy": "opt-tree", "budget": 60, "temperature": 0.0, "mal": 2.0}, "source"),
    ({"source": "x", "drafter": "d", "policy": "opt-tree", "budget": 60, "temperature": 0.0}, "mal"),
    ({"source": "x", "drafter": "d", "policy": "opt-tree", "budget": 60, "temperature": 0.0, "mal": 2.0,
      "speed": 1.0}, "speed"),
])
def test_published_rows_are_checked_against_the_grid(tmp_path, row, needle):
    prompts = tmp_path / "p.txt"
    prompts.write_text("t5 t6\n")
    raw = {"target": "t", "drafters": ["d"], "policies": ["opt-tree"], "budgets": [60], "temperatures": [0.0],
           "datasets": [{"kind": "prompts", "path": str(prompts)}], "published": [row]}
    with pytest.raises(OptTreeError) as err:
        parse_config(raw, tmp_path)
    assert needle in str(err.value) and "\n" not in str(err.value)
