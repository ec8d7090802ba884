"""benchmarks/tree_vs_chain.py's tables on a hand-made run: two prompts, AR, a chain peer and a tree
method whose two logged steps are known node by node."""
from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import load_benchmark
from treeviz.analysis import nodes_with_parent_state


@pytest.fixture(scope="module")
def tvc():
    return load_benchmark("tree_vs_chain")


def results() -> pd.DataFrame:
    rows = []
    for prompt in ("a", "b"):
        rows += [{"kind": "ar", "prompt_id": prompt, "seconds": 10.0, "draft_s": None, "verify_s": None,
                  "build_s": None, "steps": 20, "new_tokens": 20},
                 {"kind": "hf-assisted", "prompt_id": prompt, "seconds": 6.0, "draft_s": 2.0, "verify_s": 4.0,
                  "build_s": None, "steps": 5, "new_tokens": 20},
                 {"kind": "tree", "prompt_id": prompt, "seconds": 5.0, "draft_s": 1.0, "verify_s": 2.5,
                  "build_s": 0.5, "steps": 5, "new_tokens": 20}]
    return pd.DataFrame(rows)


def nodes() -> pd.DataFrame:
    """Step 0: a chain root-1-2 accepted whole and a rejected sibling 3 (rank 1); step 1: 1 accepted,
    its child 2 rejected, sibling 3 (rank 1) rejected."""
    def step(i, accepted):
        return pd.DataFrame({"step": i, "node": [0, 1, 2, 3], "parent": [-1, 0, 1, 0], "depth": [0, 1, 2, 1],
                             "rank": [0, 0, 0, 1], "q": [1.0, 0.95, 0.9, 0.05], "accepted": accepted})
    log = SimpleNamespace(nodes=pd.concat([step(0, [True, True, True, False]), step(1, [True, True, False, False])]))
    return nodes_with_parent_state(log).assign(log="x")  # what tree_vs_chain.step_nodes gives per log


def test_the_time_split_is_per_prompt_and_the_tree_rest_is_outside_its_steps(tvc):
    split = tvc.time_split(results())
    assert split.loc["tree", "rest"] == pytest.approx(1.0)  # 5 - 1 - 2.5 - 0.5
    assert split.loc["hf-assisted", "rest"] == pytest.approx(0.0)
    assert split.loc["tree", "mal"] == pytest.approx(4.0) and split.loc["tree", "steps"] == pytest.approx(5.0)


def test_calibration_counts_children_of_accepted_parents_only(tvc):
    table = tvc.calibration(nodes())
    assert table["children"].sum() == 6  # every drafted node here has an accepted parent
    top = table.iloc[-1]  # the highest bin drafted, (0.9, 0.95]: the two 0.95s, both accepted
    assert top["children"] == 2 and top["accepted"] == 1.0
    assert table.loc[table["mean_q"] < 0.1, "accepted"].item() == 0.0


def test_shape_use_names_what_width_and_depth_bought(tvc):
    use = tvc.shape_use(nodes())
    assert use["accepted drafted tokens"] == 3
    assert use["not their parent's top draft"] == 0.0
    assert use["steps whose deepest path was accepted whole"] == 0.5
    assert use["their share of accepted drafted tokens"] == pytest.approx(2 / 3)


def test_the_floor_drafts_one_forward_per_accepted_token(tvc):
    split = tvc.time_split(results())
    floor, ratio = tvc.floor_ratio(split, "tree", "hf-assisted", draft_forward_s=0.1)
    assert floor == pytest.approx(1.0 + 5 * (0.5 + 3 * 0.1))  # rest + steps × (verify + (MAL - 1) forwards)
    assert ratio == pytest.approx(6.0 / floor)
