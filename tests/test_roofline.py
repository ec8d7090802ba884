"""The roofline figure (issue 25): it draws exactly the costs and bounds its table holds."""
import json

import numpy as np
import pytest

from treeviz.roofline import read_roofline, roofline_figure, roofline_table

RECORD = {"machine": "Test CPU (avx2), 2 threads", "date": "2026-12-05", "context": 256, "repeats": 3,
          "sizes": [1, 2, 4, 8, 16], "command": "test",
          "configs": [{"target": "small", "dtype": "float32", "kernels": "skinny",
                       "seconds": [0.02, 0.03, 0.04, 0.06, 0.10], "mal": {"4": 2.0, "8": 2.4, "32": 3.0},
                       "mal_from": "run-a"},
                      {"target": "big", "dtype": "bfloat16", "kernels": "invariant",
                       "seconds": [0.30, 0.31, 0.31, 0.33, 0.36], "mal": {"7": 4.2, "15": 4.8}, "mal_from": "run-b"}]}


def test_the_bound_is_mal_over_the_cost_of_verifying_n_plus_one_tokens():
    table = roofline_table(RECORD).set_index(["config", "budget"])
    small = table.loc[("small float32 (skinny)", 4)]
    # T(5)/T(1) interpolated in log2(q) between q = 4 (2.0) and q = 8 (3.0)
    cost = 2.0 + (np.log2(5) - 2) * 1.0
    assert small["verify_cost"] == pytest.approx(cost) and small["speedup_bound"] == pytest.approx(2.0 / cost)
    big = table.loc[("big bfloat16 (invariant)", 15)]
    assert big["verify_cost"] == pytest.approx(0.36 / 0.30) and big["speedup_bound"] == pytest.approx(4.8 / 1.2)
    assert ("small float32 (skinny)", 32) not in table.index  # past the largest measured size: not extrapolated


def test_the_figure_draws_the_table_and_names_the_machine(tmp_path):
    path = tmp_path / "roofline.json"
    path.write_text(json.dumps(RECORD))
    fig, table = roofline_figure(read_roofline(path))
    left, right = fig.axes[:2]
    costs = [line.get_ydata() for line in left.get_lines() if len(line.get_xdata()) == 5]
    assert np.allclose(costs[1], np.array(RECORD["configs"][1]["seconds"]) / 0.30)
    drawn = {line.get_label().split(", MAL of")[0]: list(line.get_ydata()) for line in right.get_lines()
             if line.get_label()[0] != "_"}
    for config, rows in table.groupby("config"):
        assert drawn[config] == pytest.approx(list(rows["speedup_bound"]))
    assert "Test CPU (avx2), 2 threads" in fig._suptitle.get_text()


def _fig5_results(machine: str):
    """A Fig. 5 run on ``machine``: AR at 10 tokens/s; big's OPT-Tree at n = 7 and 15 on two prompts."""
    import pandas as pd

    prompts = ("p0", "p1")
    rows = [{"kind": "ar", "policy": None, "budget": None, "temperature": 0.0, "prompt_id": p, "new_tokens": 20,
             "steps": 20, "seconds": 2.0, "draft_s": None, "build_s": None, "machine": machine} for p in prompts]
    for n, steps, seconds, draft in ((7, 5, 1.0, 0.4), (15, 4, 1.5, 0.5)):
        rows += [{"kind": "tree", "policy": "opt-tree", "budget": n, "temperature": 0.0, "prompt_id": p,
                  "new_tokens": 20, "steps": steps, "seconds": seconds, "draft_s": draft, "build_s": 0.1,
                  "machine": machine} for p in prompts]
    return pd.DataFrame(rows)


def test_budget_peaks_set_the_measured_speed_beside_the_bound_of_the_runs_own_machine():
    from treeviz.roofline import budget_peaks

    other = {**RECORD, "machine": "Other CPU", "configs": [{**RECORD["configs"][1], "seconds": [1.0] * 5}]}
    table = budget_peaks([other, RECORD], _fig5_results("Test CPU (avx2)"), "big", "bfloat16").set_index("budget")
    assert table.loc[7, "mal"] == pytest.approx(4.0) and table.loc[15, "mal"] == pytest.approx(5.0)
    assert table.loc[7, "speedup"] == pytest.approx(20 / 1.0 / 10) and table.loc[15, "speedup"] == pytest.approx(20 / 1.5 / 10)
    assert table.loc[7, "speedup_drafting_free"] == pytest.approx(20 / 0.5 / 10)  # 1.0 s less 0.4 drafting, 0.1 building
    cost = np.interp(np.log2(8), np.log2(RECORD["sizes"]), np.array(RECORD["configs"][1]["seconds"]) / 0.30)
    assert table.loc[7, "roofline_bound"] == pytest.approx(4.0 / cost)  # from Test CPU's profile, not Other CPU's
    with pytest.raises(ValueError, match="no roofline was measured on Third CPU"):
        budget_peaks([RECORD], _fig5_results("Third CPU"), "big", "bfloat16")
    with pytest.raises(ValueError, match="has no big in float32"):
        budget_peaks([RECORD], _fig5_results("Test CPU (avx2)"), "big", "float32")
