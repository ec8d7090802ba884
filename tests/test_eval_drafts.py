"""benchmarks/eval_drafts.py's report arithmetic: MAL, tree depth and shard merging."""
import json

import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def eval_drafts():
    return load_benchmark("eval_drafts")


def _report(lengths, depths):
    return {"prompts": 1, "raw": {"lengths": {"d": lengths}, "depths": {"d": depths},
                                  "totals": {"d": {"tokens": 10, "seconds": 2.0}}}}


def test_depth_summary_pairs_each_step_with_its_tree(eval_drafts):
    # qa: A = 3 from a depth-2 tree (its deepest path accepted), A = 1 from depth 3;
    # math: A = 4 from depth 5, A = 6 from depth 5 (deepest path accepted).
    entry = eval_drafts.summarise(_report({"qa": [3, 1], "math": [4, 6]}, {"qa": [2, 3], "math": [5, 5]}))["drafts"]["d"]
    assert entry["mal"] == pytest.approx(14 / 4)
    assert entry["mean_tree_depth"] == pytest.approx(15 / 4)
    assert entry["deepest_path_accepted"] == pytest.approx(2 / 4)


def test_a_depth_list_of_the_wrong_length_is_an_error(eval_drafts):
    with pytest.raises(ValueError):
        eval_drafts.summarise(_report({"qa": [3, 1]}, {"qa": [2]}))


def test_merged_shards_equal_one_run(eval_drafts, tmp_path):
    whole = eval_drafts.summarise(_report({"qa": [3, 1, 2], "math": [4]}, {"qa": [2, 3, 1], "math": [5]}))
    shards = [_report({"qa": [3, 1]}, {"qa": [2, 3]}), _report({"qa": [2], "math": [4]}, {"qa": [1], "math": [5]})]
    paths = []
    for i, shard in enumerate(shards):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(eval_drafts.summarise(shard)))
    merged = eval_drafts.merge([str(p) for p in paths])["drafts"]["d"]
    for key in ("mal", "mean_tree_depth", "deepest_path_accepted"):
        assert merged[key] == pytest.approx(whole["drafts"]["d"][key])
    assert merged["mal_by_group"] == pytest.approx(whole["drafts"]["d"]["mal_by_group"])
