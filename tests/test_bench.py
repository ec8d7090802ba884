"""The bench harness on tiny random models: metrics that recompute from the logs, resume after an
interruption, greedy outputs equal to AR (HF assisted included), and one-line config errors."""
import json

import pandas as pd
import pytest

from opttree_core.machine import describe_machine
from opttree_core.records import MACHINE_COLUMN, RESULT_COLUMNS, SUMMARY_COLUMNS
from opttree_core.tools.bench import markdown_table, run_bench, summarize
from opttree_core.tools.bench.config import load_config
from opttree_core.tools.cli import main
from opttree_core.errors import OptTreeError
from opttree_core.models import load_model, tiny_llama_config, tiny_tokenizer
from opttree_core.treelog import TreeLog

TIMINGS = ["seconds", "tokens_per_s", "draft_s", "verify_s", "build_s"]


def save_tiny(path, layers, seed_range=0.5):
    loaded = load_model(tiny_llama_config(vocab_size=128, num_hidden_layers=layers, initializer_range=seed_range))
    loaded.model.save_pretrained(path)
    tiny_tokenizer(128).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-models")
    return {"target": save_tiny(root / "target", 2), "draft": save_tiny(root / "draft", 1)}


def config_dict(models, prompts_file, **extra):
    return {"target": models["target"], "drafters": [models["draft"]], "policies": ["opt-tree", "chain"],
            "budgets": [4], "temperatures": [0.0], "max_new_tokens": 8, "chat": False,
            "peers": ["ar", "hf-assisted"], "datasets": [{"kind": "prompts", "path": str(prompts_file)}], **extra}


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench-prompts") / "prompts.txt"
    path.write_text("t5 t6 t7 t8\n\nt20 t21 t9\n")
    return path


@pytest.fixture(scope="module")
def full_run(models, prompts_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-run") / "run"
    return run_bench(config_dict(models, prompts_file), out, progress=False)


def test_results_schema_and_grid(full_run):
    results = full_run.results
    assert list(results.columns) == RESULT_COLUMNS + [MACHINE_COLUMN]
    assert list(full_run.summary.columns) == SUMMARY_COLUMNS
    assert set(results[MACHINE_COLUMN]) == {describe_machine("cpu")}  # each row names the machine that timed it
    # 2 prompts × (AR + 2 policies + HF assisted with the draft LM)
    assert len(results) == 2 * 4 and results["prompt_id"].nunique() == 2
    assert set(results["kind"]) == {"ar", "tree", "hf-assisted"} and full_run.skipped == []
    on_disk = pd.read_parquet(full_run.out_dir / "results.parquet")
    pd.testing.assert_frame_equal(on_disk, results)
    assert json.loads((full_run.out_dir / "config.json").read_text())["config"]["budgets"] == [4]


def test_tree_metrics_recompute_from_logs(full_run):
    trees = full_run.results[full_run.results["kind"] == "tree"]
    assert len(trees) == 4
    for row in trees.itertuples():
        log = TreeLog.load(full_run.out_dir / row.log_dir)
        steps = log.steps
        assert row.new_tokens == steps["a"].sum() == len(log.meta["token_ids"])
        assert row.steps == len(steps) and row.mal == pytest.approx(steps["a"].mean())
        assert row.expected_acceptance == pytest.approx(steps["ea"].mean())
        for column in ("draft_s", "verify_s", "build_s"):
            assert getattr(row, column) == pytest.approx(steps[column].sum())
            assert (steps[column] >= 0).all()
        assert row.draft_s + row.verify_s + row.build_s <= row.seconds


def test_greedy_outputs_equal_ar(full_run):
    results = full_run.results
    assert results["output_matches_ar"].all()  # every tree method and HF assisted, on both prompts
    hf = results[results["kind"] == "hf-assisted"]
    assert len(hf) == 2 and (hf["steps"] >= 1).all()
    assert (hf["mal"] == hf["new_tokens"] / hf["steps"]).all()


def test_summary_speedup_is_a_ratio_of_pooled_throughputs(full_run):
    results, summary = full_run.results, summarize(full_run.out_dir)
    pd.testing.assert_frame_equal(summary, full_run.summary)
    ar = results[results["kind"] == "ar"]
    ar_tps = ar["new_tokens"].sum() / ar["seconds"].sum()
    for row in summary.itertuples():
        rows = results[results["method"] == row.method]
        assert row.n_prompts == 2 and row.new_tokens == rows["new_tokens"].sum()
        assert row.speedup == pytest.approx(rows["new_tokens"].sum() / rows["seconds"].sum() / ar_tps)
        assert row.mal == pytest.approx(rows["new_tokens"].sum() / rows["steps"].sum())
    assert summary.loc[summary["kind"] == "ar", "speedup"].item() == pytest.approx(1.0)
    table = markdown_table(summary)
    assert "| n=4 |" in table and "hf-assisted" in table and table.count("\n| ") >= 6


def test_resume_after_interruption_redoes_nothing(models, prompts_file, full_run, tmp_path):
    out, seen = tmp_path / "run", []

    def interrupt(prompt_id, method):
        seen.append((prompt_id, method))
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_bench(config_dict(models, prompts_file), out, progress=False, on_pair=interrupt)
    assert len(pd.read_parquet(out / "results.parquet")) == 5  # what finished is kept
    again = []
    resumed = run_bench(config_dict(models, prompts_file), out, progress=False,
                        on_pair=lambda p, m: again.append((p, m)))
    assert resumed.resumed == 5 and resumed.ran == 3 and not set(again) & set(seen)
    key = ["prompt_id", "method"]
    a = resumed.results.drop(columns=TIMINGS).sort_values(key).reset_index(drop=True)
    b = full_run.results.drop(columns=TIMINGS).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_a_prompt_part_run_on_another_machine_runs_again_whole_on_this_one(models, prompts_file, full_run, tmp_path,
                                                                          capsys):
    """A run resumed on another machine: a prompt finished there stays, one part-run there is set aside
    (rows to superseded.jsonl, tree logs under superseded/) and runs whole here, so each prompt's
    speedups are ratios from one machine; bench-table says which machine timed how many prompts."""
    import shutil

    out, here, elsewhere = tmp_path / "run", describe_machine("cpu"), "Other CPU, 2 cores (cpu family 25, model 17; avx2)"
    shutil.copytree(full_run.out_dir, out)
    records = [json.loads(line) for line in (out / "progress.jsonl").read_text().splitlines()]
    first, second = sorted({r["row"]["prompt_id"] for r in records})
    kept = [r for r in records if not (r["row"]["prompt_id"] == second and r["row"]["policy"] == "chain")]
    for r in kept:
        r["row"][MACHINE_COLUMN] = elsewhere
    (out / "progress.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    part = [r["row"] for r in kept if r["row"]["prompt_id"] == second]
    ran = []
    resumed = run_bench(config_dict(models, prompts_file), out, progress=False, on_pair=lambda p, m: ran.append((p, m)))
    assert {p for p, _ in ran} == {second} and len(ran) == 4 and resumed.resumed == 4
    machines = resumed.results.groupby("prompt_id")[MACHINE_COLUMN].unique()
    assert list(machines[first]) == [elsewhere] and list(machines[second]) == [here]
    superseded = [json.loads(line)["row"] for line in (out / "superseded.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in superseded) == sorted(r["method"] for r in part) and len(part) == 3
    logged = [r["log_dir"] for r in part if r["log_dir"]]
    assert logged and all((out / "superseded" / d / "meta.json").is_file() and (out / d / "meta.json").is_file()
                          for d in logged)
    assert f"{second} part-run on another machine ({elsewhere}): its 3 pairs are set aside" in capsys.readouterr().err
    assert main(["bench-table", str(out)]) == 0
    table = capsys.readouterr().out
    assert "Measured on 2 machines:" in table and f"- {elsewhere}: 1 prompt\n" in table and f"- {here}: 1 prompt" in table


def test_drafts_that_are_not_causal_lms_are_skipped_as_hf_assistants(models, prompts_file):
    from opttree_core.tools.bench import build_methods
    from opttree_core.tools.bench.config import parse_config
    from opttree_core.drafters.ngram import NGramDrafter

    config = parse_config(config_dict(models, prompts_file, drafters=["ngram"]), prompts_file.parent)
    methods, skipped = build_methods(config, {"ngram": NGramDrafter(128)})
    assert [m.kind for m in methods] == ["ar", "tree", "tree"]
    assert len(skipped) == 1 and "'ngram'" in skipped[0] and "not a full causal LM" in skipped[0]


def test_a_policy_runs_at_its_own_budgets_where_policy_budgets_names_them(models, prompts_file):
    from opttree_core.tools.bench import build_methods
    from opttree_core.tools.bench.config import parse_config
    from opttree_core.drafters.ngram import NGramDrafter

    raw = config_dict(models, prompts_file, drafters=["ngram"], budgets=[4, 8], policy_budgets={"chain": [16]})
    config = parse_config(raw, prompts_file.parent)
    methods, _ = build_methods(config, {"ngram": NGramDrafter(128)})
    assert [m.label for m in methods] == ["ar T=0", "opt-tree n=4 ngram T=0", "opt-tree n=8 ngram T=0",
                                          "chain n=16 ngram T=0"]
    assert config.to_dict()["policy_budgets"] == {"chain": [16]}
    assert "policy_budgets" not in parse_config(config_dict(models, prompts_file), prompts_file.parent).to_dict()


def test_changed_config_on_resume_is_one_line_error(models, prompts_file, full_run):
    with pytest.raises(OptTreeError, match="another config \\(changed: budgets\\)"):
        run_bench(config_dict(models, prompts_file, budgets=[5]), full_run.out_dir, progress=False)


def test_a_run_grows_by_prompts_added_to_its_datasets_and_never_shrinks(models, prompts_file, full_run, tmp_path):
    """A resumed run may add prompts (its datasets changed, every prompt it ran still there unchanged):
    only the new prompts run, and config.json records the growth; dropping a prompt is refused."""
    out, first_only = tmp_path / "run", dict(config_dict(models, prompts_file),
                                             datasets=[{"kind": "prompts", "path": str(prompts_file), "limit": 1}])
    assert set(run_bench(first_only, out, progress=False).results["prompt_id"]) == {"prompts-0"}
    ran = []
    grown = run_bench(config_dict(models, prompts_file), out, progress=False, on_pair=lambda p, m: ran.append(p))
    assert (grown.resumed, grown.ran) == (4, 4) and set(ran) == {"prompts-1"}
    key = ["prompt_id", "method"]
    pd.testing.assert_frame_equal(grown.results.drop(columns=TIMINGS).sort_values(key).reset_index(drop=True),
                                  full_run.results.drop(columns=TIMINGS).sort_values(key).reset_index(drop=True))
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["datasets"][0]["limit"] is None and meta["n_prompts"] == 2
    assert [(g["prompts_before"], g["datasets_before"][0]["limit"]) for g in meta["grown"]] == [(1, 1)]
    with pytest.raises(OptTreeError, match=r"another config \(changed: datasets\) \(datasets may change only by "
                                           r"adding prompts\): resume with the same config"):
        run_bench(first_only, out, progress=False)


BAD = [  # (TOML line replacing the base key it names, message)
    ('policies = ["opt-tree", "no-such"]', "unknown policy 'no-such'"),
    ("budgets = [0]", "budgets must be >= 1"),
    ("temperatures = []", "'temperatures' must be a non-empty list"),
    ("colour = 3", "key 'colour' is unknown"),
    ("policy_params = { opt-tree = { width = 2 } }", "policy 'opt-tree' has no parameter 'width'"),
    ('peers = ["hf-assisted"]', "peers must include 'ar'"),
    ("policy_budgets = { chain = [8] }", "policy_budgets names 'chain', which is not in 'policies'"),
    ("policy_budgets = { opt-tree = [0] }", "policy_budgets.opt-tree must be >= 1"),
    ("policy_budgets = { opt-tree = [] }", "'policy_budgets.opt-tree' must be a non-empty list"),
]


@pytest.mark.parametrize("line,needle", BAD)
def test_bad_config_is_one_line_error(models, tmp_path, capsys, line, needle):
    (tmp_path / "prompts.txt").write_text("t5 t6\n")
    base = {"target": models["target"], "drafters": ["ngram"], "policies": ["opt-tree"], "budgets": [4],
            "temperatures": [0.0]}
    key = line.split(" = ")[0]
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in base.items() if k != key) + line + "\n"
    config = tmp_path / "c.toml"
    config.write_text(text + '[[datasets]]\nkind = "prompts"\npath = "prompts.txt"\n')
    code = main(["bench", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and needle in err, err
    assert not (tmp_path / "run").exists()


def test_missing_dataset_file_is_one_line_error(models, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f'target = "{models["target"]}"\ndrafters = ["ngram"]\npolicies = ["opt-tree"]\nbudgets = [4]\n'
                      'temperatures = [0.0]\n[[datasets]]\nkind = "gsm8k"\npath = "nowhere/test.jsonl"\n')
    code = main(["bench", "--config", str(config), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"dataset file not found: {tmp_path}/nowhere/test.jsonl" in err


def test_dataset_sources_and_turns(tmp_path):
    spec = tmp_path / "question.jsonl"
    spec.write_text("\n".join(json.dumps(r) for r in [
        {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Now shorter."]},
        {"question_id": 82, "category": "writing", "turns": ["Write a letter.", "Now longer."]},
        {"question_id": 200, "category": "qa", "turns": ["Why is the sky blue?"]},
    ]) + "\n")
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": "1 + 1?", "answer": "#### 2"}) + "\n")
    config = tmp_path / "c.toml"
    config.write_text('target = "tiny-random"\ndrafters = ["ngram"]\npolicies = ["opt-tree"]\nbudgets = [4]\n'
                      'temperatures = [0.0]\n'
                      '[[datasets]]\nkind = "spec_bench"\npath = "question.jsonl"\nmt_bench_per_category = 1\n'
                      'per_category = 5\nturns = "all"\n'
                      '[[datasets]]\nkind = "humaneval"\nlimit = 2\nchat = false\n'
                      '[[datasets]]\nkind = "gsm8k"\npath = "gsm.jsonl"\n')
    from opttree_core.tools.bench.prompts import load_prompts

    prompts = load_prompts(load_config(config))
    ids = [p.prompt_id for p in prompts]
    assert ids == ["spec_bench-81", "spec_bench-81-turn2", "spec_bench-200", "humaneval-0", "humaneval-1", "gsm8k-0"]
    assert prompts[1].text == "Now shorter." and prompts[1].previous_id == "spec_bench-81"
    assert prompts[3].text.startswith("\n\ndef ") or "def " in prompts[3].text
    assert [p.chat for p in prompts] == [True, True, True, False, False, True]


@pytest.mark.parametrize("categories,needle", [
    (None, None), (["qa"], None), (["mt_bench/writing", "qa"], None),
    (["QA"], "Spec-Bench has no category 'QA'"), ([], "must be a non-empty list"),
])
def test_a_spec_bench_dataset_may_name_its_categories(tmp_path, categories, needle):
    (tmp_path / "question.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"question_id": 81, "category": "writing", "turns": ["Write a poem."]},
        {"question_id": 200, "category": "qa", "turns": ["Why is the sky blue?"]},
        {"question_id": 300, "category": "rag", "turns": ["Given the text, who?"]},
    ]) + "\n")
    config = tmp_path / "c.toml"
    chosen = "" if categories is None else f"categories = {json.dumps(categories)}\n"
    config.write_text('target = "tiny-random"\ndrafters = ["ngram"]\npolicies = ["opt-tree"]\nbudgets = [4]\n'
                      'temperatures = [0.0]\n[[datasets]]\nkind = "spec_bench"\npath = "question.jsonl"\n'
                      'mt_bench_per_category = 1\nper_category = 5\n' + chosen)
    from opttree_core.tools.bench.prompts import load_prompts

    if needle is not None:
        with pytest.raises(OptTreeError, match=needle):
            load_config(config)
        return
    loaded = load_config(config)
    ids = [p.prompt_id for p in load_prompts(loaded)]
    wanted = {None: ["spec_bench-81", "spec_bench-200", "spec_bench-300"], ("qa",): ["spec_bench-200"],
              ("mt_bench/writing", "qa"): ["spec_bench-81", "spec_bench-200"]}
    assert ids == wanted[None if categories is None else tuple(categories)]
    assert ("categories" in loaded.to_dict()["datasets"][0]) == (categories is not None)  # older runs resume


def test_categories_are_for_spec_bench_only(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('target = "tiny-random"\ndrafters = ["ngram"]\npolicies = ["opt-tree"]\nbudgets = [4]\n'
                      'temperatures = [0.0]\n[[datasets]]\nkind = "humaneval"\ncategories = ["qa"]\n')
    with pytest.raises(OptTreeError, match="'categories' is for spec_bench datasets, not humaneval"):
        load_config(config)


def test_generate_policy_params_are_typed_from_the_config(models, tmp_path, capsys):
    log = tmp_path / "log"
    code = main(["generate", "--target", models["target"], "--draft", models["draft"], "--nodes", "5",
                 "--policy-param", "threshold=0.25", "--policy-param", "max_depth=2", "--max-new-tokens", "6",
                 "--prompt", "t5 t6", "--log", str(log), "--json"])
    assert code == 0, capsys.readouterr().err
    assert TreeLog.load(log).meta["policy_config"] == {"nodes": 5, "threshold": 0.25, "max_depth": 2}
    code = main(["generate", "--target", models["target"], "--prompt", "t5", "--policy-param", "depth=2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "takes KEY=VALUE with KEY one of nodes, threshold, max_depth" in err
    code = main(["generate", "--target", models["target"], "--prompt", "t5", "--policy-param", "max_depth=two"])
    assert code == 2 and "max_depth=two: not a valid int" in capsys.readouterr().err


def test_every_registered_policy_is_reachable_from_the_cli():
    from opttree_core.tools.cli import build_parser, make_cli_policy
    from opttree_core.policies.registry import POLICIES

    for name in POLICIES:
        args = build_parser().parse_args(["generate", "--prompt", "x", "--policy", name, "--nodes", "6"])
        try:  # for_budget(6), and no flag forced on a policy that lacks the field
            assert make_cli_policy(args).max_nodes >= 1, name
        except OptTreeError as err:  # a policy may need data of its own (sequoia: a measured acceptance file)
            assert "has no parameter" not in str(err), err


def test_bench_table_and_the_paper_figures_report_one_speedup_on_a_partial_run(full_run, tmp_path):
    """A tree method missing one prompt (an interrupted run): ``bench-table`` (``summarize``) and the
    figures' shoot-out (``treeviz.runs.shootout_table``) both pool over the prompts AR also finished."""
    import shutil

    from treeviz.runs import load_run, shootout_table

    partial = tmp_path / "partial"
    shutil.copytree(full_run.out_dir, partial)
    results = pd.read_parquet(partial / "results.parquet")
    lost = results.index[(results["kind"] == "tree")][0]
    method = results.loc[lost, "method"]
    results = results.drop(index=lost)
    results.to_parquet(partial / "results.parquet", index=False)
    table = summarize(partial).set_index("method")["speedup"]
    figures = shootout_table(load_run(partial).results).set_index("method")["speedup"]
    assert table.to_dict() == pytest.approx(figures.to_dict(), rel=1e-12)
    rows = results[results["method"] == method]
    ar_rows = results[results["kind"] == "ar"]
    over_all = (rows["new_tokens"].sum() / rows["seconds"].sum()) / (ar_rows["new_tokens"].sum() / ar_rows["seconds"].sum())
    common = ar_rows[ar_rows["prompt_id"].isin(rows["prompt_id"])]
    over_common = (rows["new_tokens"].sum() / rows["seconds"].sum()) / (common["new_tokens"].sum() / common["seconds"].sum())
    assert table[method] == pytest.approx(over_common) and table[method] != pytest.approx(over_all)


def test_bench_table_on_a_torn_results_file_is_one_line(full_run, tmp_path, capsys):
    """Issue 26: a truncated results.parquet gave a pyarrow traceback."""
    import shutil

    torn = tmp_path / "torn"
    shutil.copytree(full_run.out_dir, torn)
    data = (torn / "results.parquet").read_bytes()
    (torn / "results.parquet").write_bytes(data[: len(data) // 2])
    assert main(["bench-table", str(torn)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {torn / 'results.parquet'} is not a readable results table (") and err.count("\n") == 1
    assert "rerun the bench command to rewrite it" in err


def test_bench_table_by_category_takes_each_categorys_speedup_over_its_own_ar(full_run, tmp_path, capsys):
    """Issue 25 asks speedups per category: a category's cell is its prompts' pooled tokens/s over AR's
    on the same prompts, and 'all prompts' is the whole run's summary."""
    import shutil

    from opttree_core.summary import category_summary

    run = tmp_path / "categories"
    shutil.copytree(full_run.out_dir, run)
    results = pd.read_parquet(run / "results.parquet")
    first = min(results["prompt_id"].unique())
    results["category"] = ["alpha" if p == first else "beta" for p in results["prompt_id"]]
    results.to_parquet(run / "results.parquet", index=False)
    table = category_summary(results)
    assert set(table["category"]) == {"alpha", "beta"} and (table["n_prompts"] == 1).all()
    for row in table.itertuples(index=False):
        mine = results[(results["method"] == row.method) & (results["category"] == row.category)]
        ar = results[(results["kind"] == "ar") & (results["category"] == row.category)]
        assert row.speedup == pytest.approx(mine["tokens_per_s"].item() / ar["tokens_per_s"].item())
    assert main(["bench-table", str(run), "--by-category"]) == 0
    out = capsys.readouterr().out
    tree = table[(table["category"] == "alpha") & (table["policy"] == "opt-tree")].iloc[0]
    assert f"| alpha | 1 | {tree.speedup:.2f}× ({tree.mal:.2f}) |" in out
    whole = summarize(run).set_index("method")
    assert f"| all prompts | 2 | {whole.loc[tree.method, 'speedup']:.2f}× ({whole.loc[tree.method, 'mal']:.2f}) |" in out
    assert "| category | prompts | opt-tree n=4 | chain n=4 | hf-assisted |" in out
