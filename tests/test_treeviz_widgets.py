"""treeviz widgets without a browser: sliders change the figures, Run decodes (self-draft on a
tiny model), live mode draws each step as it is verified, engine errors become a status line."""
from pathlib import Path

import pandas as pd
import pytest

from opttree_core.models import load_model
from opttree_core.policies.registry import POLICIES, budget_keys
from treeviz.logs import load_log, load_logs
from treeviz.plotly_tree import TREE_TRACES
from treeviz.widgets import AnalysisDashboard, CompareExplorer, TreeExplorer

DATA = Path(__file__).parent / "data" / "treeviz"
NODES = TREE_TRACES.index("nodes")


@pytest.fixture(scope="module")
def target():
    return load_model("tiny-random")


@pytest.fixture(scope="module")
def log():
    return load_log(DATA / "tiny-close-opt-tree-24")


def node_xs(explorer) -> list:
    return list(explorer.browser.tree.figure.data[NODES].x)


def test_moving_the_slider_changes_the_figure(log):
    explorer = TreeExplorer(log)
    assert explorer.browser.slider.max == len(log.steps) - 1 == explorer.browser.play.max
    before = explorer.browser.tree.figure.data[NODES].customdata
    explorer.browser.slider.value = 5
    after = explorer.browser.tree.figure.data[NODES].customdata
    assert len(after) == log.steps.iloc[5]["n_nodes"]
    assert [row[1] for row in after] != [row[1] for row in before]
    assert "step 5" in explorer.browser.facts.value
    assert 'tv-current" data-step="5"' in explorer.browser.stream.value
    assert [t.type for t in explorer.browser.side.figure.data] == ["heatmap", "icicle"]


def test_walk_through_this_step_shows_its_frames_and_follows_the_slider(log):
    explorer = TreeExplorer(log)
    browser = explorer.browser
    assert browser.walk.widget.outputs == ()  # off until ticked: no cost per slider move
    browser.walk_on.value = True
    spec = browser.walk.widget.outputs[0]["data"]["application/vnd.plotly.v1+json"]
    assert [f["name"] for f in spec["frames"]][-3:] == ["verify", "accept", "bonus"]
    assert spec["layout"]["title"]["text"].startswith("step 0 ")
    browser.slider.value = 2
    spec = browser.walk.widget.outputs[0]["data"]["application/vnd.plotly.v1+json"]
    assert spec["layout"]["title"]["text"].startswith("step 2 ")
    browser.walk_on.value = False
    assert browser.walk.widget.outputs == ()


def test_the_widget_state_is_the_whole_current_figure_as_plain_json(log):
    """What the front end draws: the Output widget's state holds one complete plotly figure, the
    current one, so a page that missed updates or was reloaded draws the latest step."""
    import json

    from treeviz.widgets import PLOTLY_MIME

    explorer = TreeExplorer(log)
    view = explorer.browser.tree
    first = view.revision
    explorer.browser.slider.value = 3
    explorer.browser.slider.value = 7
    assert view.revision == first + 2 and len(view.widget.outputs) == 1
    spec = json.loads(json.dumps(view.widget.outputs))[0]["data"][PLOTLY_MIME]  # survives the comm's JSON
    nodes = log.nodes[log.nodes.step == 7].sort_values("node")["token"].tolist()
    assert [row[1] for row in spec["data"][NODES]["customdata"]] == nodes
    assert spec["layout"]["title"]["text"].startswith("step 7") and spec["config"]["displaylogo"] is False
    assert "step 7 / " in explorer.browser.facts.value
    steps = log.steps["a"].to_numpy()
    assert f"MAL over steps 0–7: {steps[:8].mean():.2f}" in explorer.browser.facts.value  # so far, not the whole run
    assert TreeExplorer().browser.tree.widget.outputs == ()  # nothing to draw: no empty axes


def test_policy_menu_comes_from_the_engine_with_a_typed_control_per_parameter(log):
    import dataclasses

    explorer = TreeExplorer(log)
    assert list(explorer.policy.policy.options) == sorted(POLICIES)
    for name, (_, config_cls) in POLICIES.items():  # every parameter n does not set has a control
        explorer.policy.policy.value = name
        assert list(explorer.policy.fields) == [f.name for f in dataclasses.fields(config_cls)
                                                if f.name not in budget_keys(name)]
        assert explorer.policy.values()["params"] == dataclasses.asdict(config_cls.for_budget(16))
    explorer.policy.policy.value = "opt-tree"
    assert "nodes" not in explorer.policy.fields and "n sets nodes for opt-tree" in explorer.policy.note.value
    explorer.policy.policy.value = "dynatree"
    explorer.policy.field("tau").value = 0.2
    explorer.policy.nodes.value = 30  # the budget sets what for_budget sets, and keeps the rest
    assert explorer.policy.values()["params"] == {**dataclasses.asdict(POLICIES["dynatree"][1](nodes=30)),
                                                       "tau": 0.2}
    explorer.policy.policy.value = "sequoia"
    explorer.policy.field("max_depth").value = "none"
    assert explorer.policy.values()["params"]["max_depth"] is None
    assert explorer.decode.run.disabled  # no model given: nothing to decode with


def test_switching_policy_keeps_the_parameters_both_have_and_says_so(log):
    """Issue 27: switching policy silently reset δ and max depth."""
    controls = TreeExplorer(log).policy
    controls.policy.value = "opt-tree"
    controls.field("threshold").value, controls.field("max_depth").value = 0.05, 3
    controls.policy.value = "sequoia"
    assert controls.field("max_depth").value == "3"  # sequoia's max_depth may be none: a text control
    assert "kept from opt-tree: max_depth = 3; sequoia's defaults: acceptance" in controls.note.value
    controls.policy.value = "opt-tree"
    assert controls.field("max_depth").value == 3 and controls.field("threshold").value == 0.5
    assert "kept from sequoia: max_depth = 3; opt-tree's defaults: threshold" in controls.note.value
    assert controls.values()["params"] == {"nodes": controls.nodes.value, "threshold": 0.5, "max_depth": 3}


def test_run_with_the_self_draft_makes_a_new_log_and_figure(log, target):
    explorer = TreeExplorer(log, target=target, prompt="t5 t9 t20 t7", max_new_tokens=10, live=False)
    explorer.policy.nodes.value, explorer.policy.field("max_depth").value = 6, 3
    before = explorer.browser.tree.figure.data[NODES].customdata
    new = explorer.run()
    assert new is not None and new is explorer.data and new is not log
    assert new.meta["draft"] == "self" and new.meta["policy_config"]["nodes"] == 6
    assert new.steps["a"].sum() == len(new.meta["token_ids"]) == 10
    assert (new.steps["a"].to_numpy() <= new.nodes.groupby("step")["accepted"].sum().to_numpy()).all()
    after = explorer.browser.tree.figure.data[NODES].customdata
    assert len(after) == new.steps.iloc[0]["n_nodes"] and after != before
    assert "MAL" in explorer.decode.status.value


def test_live_run_draws_each_step_as_it_is_verified(target):
    explorer = TreeExplorer(target=target, prompt="t5 t9 t20 t7", max_new_tokens=8, nodes=5,
                            params={"max_depth": 3}, live=True)
    seen = []
    show = explorer.browser.show
    explorer.browser.show = lambda step: (seen.append((step, len(explorer.data.steps))), show(step))
    final = explorer.run()
    live = [(step, n) for step, n in seen if n == step + 1]  # the newest step, as soon as it exists
    assert [step for step, _ in live][: len(final.steps)] == list(range(len(final.steps)))
    assert seen[-1] == (0, len(final.steps))  # then the whole log, from its first step


def test_live_frames_equal_the_saved_log(target):
    from treeviz.rerun import Rerunner, RunRequest

    frames = []
    final = Rerunner(target).run(RunRequest(prompt="t5 t9 t20", params={"nodes": 5, "threshold": 0.2, "max_depth": 3},
                                            max_new_tokens=6), on_step=frames.append)
    live = frames[-1]
    assert [len(f.steps) for f in frames] == list(range(1, len(final.steps) + 1))
    pd.testing.assert_frame_equal(live.nodes, final.nodes)
    pd.testing.assert_frame_equal(live.steps, final.steps)  # times included: no NaN placeholders
    assert live.steps[["draft_s", "verify_s"]].notna().all().all() and (live.steps["verify_s"] > 0).all()


def test_sampling_runs_and_engine_errors_show_in_the_widget_instead_of_raising(target):
    explorer = TreeExplorer(target=target, prompt="t5 t9", max_new_tokens=4)
    explorer.decode.temperature.value = 0.8
    sampled = explorer.run()
    assert sampled is not None and sampled.meta["decode_config"]["temperature"] == 0.8
    explorer.decode.temperature.value = 0.0
    explorer.decode.prompt.value = "   "
    assert explorer.run() is None and "prompt is empty" in explorer.decode.status.value
    assert not explorer.decode.run.disabled


def test_compare_explorer_grows_both_policies_from_the_identical_prefix_at_equal_n(target):
    """Issue 27: it aligned two runs by step index (different prefixes at step 3) and let n differ."""
    compare = CompareExplorer(target=target, prompt="t5 t9 t20 t7", nodes=6)
    compare.decode.max_new_tokens.value = 12
    reference = compare.run()
    assert reference.meta["policy"] == "opt-tree" and len(reference.steps) > 2
    compare.slider.value = 2
    left, right = (side.data for side in compare.sides)
    assert left.meta["prompt_ids"] == right.meta["prompt_ids"] == reference.prefix(2)  # the same prefix and root
    assert left.nodes.query("node == 0")["token"].item() == right.nodes.query("node == 0")["token"].item()
    assert (left.meta["policy"], right.meta["policy"]) == ("opt-tree", "chain")
    assert left.meta["policy_config"]["nodes"] == right.meta["policy_config"]["length"] == 6  # equal n
    logged = reference.nodes[reference.nodes["step"] == 2]
    assert left.nodes["token"].tolist() == logged["token"].tolist()  # the reference policy re-grows its own tree
    for side, data in zip(compare.sides, (left, right)):
        assert len(side.tree.figure.data[NODES].x) == data.steps.iloc[0]["n_nodes"]
        assert f"E(A) = {data.steps.iloc[0]['ea']:.2f}" in side.facts.value
    compare.nodes.value = 3  # one n for both: both re-grow
    assert [side.data.steps.iloc[0]["n_nodes"] for side in compare.sides] == [4, 4]
    assert "re-grown from the identical prefix" in compare.decode.status.value


def test_regrow_explorer_redraws_one_step_as_its_controls_change(target, log):
    from treeviz.widgets import RegrowExplorer

    explorer = RegrowExplorer(log, target=target, policy="chain", nodes=6)
    explorer.slider.value = 3
    side = explorer.sides[0]
    assert side.data.meta["prompt_ids"] == log.prefix(3) and int(side.data.nodes["depth"].max()) == 6
    explorer.nodes.value = 3  # n re-grows the step at once
    assert side.data.steps.iloc[0]["n_nodes"] == 4 and len(side.tree.figure.data[NODES].x) == 4
    side.controls.policy.value = "opt-tree"  # so does the policy menu
    assert side.data.meta["policy"] == "opt-tree" and side.data.meta["policy_config"]["nodes"] == 3
    side.controls.field("threshold").value = 0.9  # and each parameter's control
    assert side.data.meta["policy_config"]["threshold"] == 0.9
    assert "re-grown from the identical prefix" in explorer.decode.status.value


def test_dashboard_updates_heatmap_r_and_curves_in_place():
    logs = load_logs(sorted(DATA.glob("tiny-*")))
    dashboard = AnalysisDashboard(logs)
    heatmap, curves = dashboard.heatmap.figure, dashboard.curves.figure

    def panels():
        return [t for t in heatmap.data if t.type == "heatmap"]

    assert len(panels()) == 2 and len(curves.data) == 4
    assert [t.name for t in heatmap.data if t.type == "scatter"][0] == "A = E(A) + 1"
    assert panels()[0].x == panels()[1].x and panels()[0].y == panels()[1].y  # one range for every panel
    assert dashboard.stats.value.count("Pearson r") == 2
    dashboard.groups.value = (dashboard.groups.options[0],)
    assert dashboard.heatmap.figure is heatmap and len(panels()) == 1
    assert dashboard.stats.value.count("Pearson r") == 1
    dashboard.policies.value = ("opt-tree",)
    assert [t.name for t in curves.data] == ["opt-tree"] and list(curves.data[0].x) == [4, 12, 24]
    z = panels()[0].z
    assert all(n is None or n > 0 for row in z for n in row)  # a cell without a step is blank, not a zero colour
    total = sum(n for row in z for n in row if n is not None)
    assert total == sum(len(logs[r].steps) for r in dashboard.selected())
    dashboard.runs.value = ()
    assert "no run selected" in dashboard.stats.value


def _shown(widget) -> list:
    """Every widget a view of ``widget`` draws (its children, theirs, ...)."""
    found = [widget]
    for child in getattr(widget, "children", ()):
        found += _shown(child)
    return found


def test_every_explorer_shows_its_node_budget_control(target, log):
    """RegrowExplorer's n was shared with its one tree's controls (so they left it out) and never drawn."""
    from treeviz.widgets import RegrowExplorer

    for explorer in (TreeExplorer(log), RegrowExplorer(log, target=target, policy="chain", nodes=6),
                     CompareExplorer(log, target=target, nodes=6)):
        budgets = [w for w in _shown(explorer.widget) if getattr(w, "description", "") == "n (node budget)"]
        assert len(budgets) == 1, f"{type(explorer).__name__} shows {len(budgets)} node budget controls"
