"""treeviz: a log step as a graph, the tidy and dot layouts, and which labels a big tree shows."""
import random
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import treeviz

from treeviz.graph import (
    ACCEPTED,
    BONUS,
    REJECTED,
    ROOT,
    accepted_path,
    ancestor_matrix,
    parents_array,
    step_graph,
)
from treeviz.layout import dot_layout, has_dot, tidy_layout, tidy_positions
from treeviz.logs import load_log, visible
from treeviz.plotly_tree import tree_figure
from treeviz.scene import label_px, label_width_px, tree_scene

DATA = Path(__file__).parent / "data" / "treeviz"
WORDS = [" the", " a", "\n", " data", "Hash", " table", ".", " is", "\t", " of", "ing", " structure"]


def synthetic_log(n_nodes: int = 500, seed: int = 0, max_depth: int = 8, accepted_depth: int = 4):
    """A one-step log of a breadth-first tree like OPT-Tree's, built without a model."""
    rng = random.Random(seed)
    parents, depth, q, p_hat, rank = [-1], [0], [1.0], [1.0], [0]
    layer, per_layer = [0], max(1, (n_nodes - 1) // max_depth)
    while len(parents) < n_nodes:
        d = depth[layer[0]] + 1
        size = min(per_layer + rng.randint(0, per_layer), n_nodes - len(parents))
        chosen = sorted(rng.choice(layer[: max(1, len(layer) // 2)] if rng.random() < 0.7 else layer)
                        for _ in range(size))
        new, kids = [], Counter()
        for parent in chosen:
            parents.append(parent), depth.append(d), rank.append(kids[parent])
            kids[parent] += 1
            q.append(rng.uniform(0.05, 0.9) / (1 + rank[-1]))
            p_hat.append(p_hat[parent] * q[-1])
            new.append(len(parents) - 1)
        layer = new if d < max_depth else [0]
    n = len(parents)
    accepted, node = [False] * n, 0
    accepted[0] = True
    for _ in range(accepted_depth):
        children = [c for c in range(n) if parents[c] == node and rank[c] == 0]
        if not children:
            break
        node = children[0]
        accepted[node] = True
    tokens = [rng.randrange(3, 5000) for _ in range(n)]
    nodes = pd.DataFrame({"step": 0, "node": range(n), "token": tokens, "parent": parents, "depth": depth,
                          "p_hat": np.float32(p_hat), "q": np.float32(q), "rank": rank,
                          "target_token": [rng.randrange(3, 5000) for _ in range(n)], "accepted": accepted,
                          "token_text": [WORDS[t % len(WORDS)] for t in tokens]})
    steps = pd.DataFrame({"step": [0], "n_nodes": [n], "a": [sum(accepted)], "bonus_token": [7],
                          "draft_s": [0.1], "verify_s": [0.05], "ea": [float(np.float32(p_hat)[1:].sum())]})
    return SimpleNamespace(nodes=nodes, steps=steps, meta={"policy": "opt-tree", "policy_config": {"nodes": n - 1}})


@pytest.fixture(scope="module")
def log():
    return load_log(DATA / "tiny-close-opt-tree-24")


def test_step_graph_carries_every_node_attribute(log):
    for step in range(len(log.steps)):
        rows = log.nodes[log.nodes.step == step].sort_values("node")
        graph = step_graph(log, step)
        bonus = graph.graph["bonus_node"]
        assert graph.number_of_nodes() == len(rows) + (bonus is not None)
        for row in rows.itertuples():
            attrs = graph.nodes[row.node]
            assert (attrs["token"], attrs["text"], attrs["depth"], attrs["rank"]) == (
                row.token, row.token_text, row.depth, row.rank)
            assert attrs["p_hat"] == pytest.approx(row.p_hat) and attrs["q"] == pytest.approx(row.q)
            assert attrs["log_p_hat"] == pytest.approx(np.log(row.p_hat))
            assert attrs["accepted"] == row.accepted and attrs["target_token"] == row.target_token
            assert attrs["kind"] == (ROOT if row.node == 0 else ACCEPTED if row.accepted else REJECTED)
            if row.parent >= 0:
                assert graph.has_edge(row.parent, row.node)


def test_bonus_token_hangs_below_the_last_accepted_node(log):
    for step in range(len(log.steps)):
        graph = step_graph(log, step)
        info = log.steps.iloc[step]
        path = accepted_path(graph)
        assert len(path) == info["a"]  # root + A − 1 accepted nodes
        bonus = graph.graph["bonus_node"]
        assert bonus == info["n_nodes"] and list(graph.predecessors(bonus)) == [path[-1]]
        attrs = graph.nodes[bonus]
        assert attrs["kind"] == BONUS and attrs["token"] == info["bonus_token"] and not attrs["drafted"]
        assert attrs["depth"] == graph.nodes[path[-1]]["depth"] + 1
        last_target = log.nodes[(log.nodes.step == step) & (log.nodes.node == path[-1])]["target_token"].item()
        assert last_target == info["bonus_token"]  # the target's own token after the path


def test_ancestor_matrix_is_the_tree_attention_mask(log):
    graph = step_graph(log, 3, bonus=False)
    mask = ancestor_matrix(parents_array(graph))
    for i in graph.nodes:
        ancestors = {i} | {a for a in graph.nodes if a != i and i in __import__("networkx").descendants(graph, a)}
        assert set(np.flatnonzero(mask[i])) == ancestors


def test_visible_whitespace():
    assert visible(" the\n\tx") == "␣the↵⇥x"
    assert visible("") == "∅"
    assert visible("\x00a") == "\\x00a"
    assert visible("abcdefghij", max_len=5) == "abcd…"


def assert_tidy(pos: dict, parents: dict) -> None:
    levels: dict[float, list[float]] = {}
    for x, y in pos.values():
        levels.setdefault(y, []).append(x)
    for xs in levels.values():
        assert all(b - a >= 1 - 1e-9 for a, b in pairwise(sorted(xs))), "two nodes overlap on one level"
    children: dict[int, list[int]] = {}
    for v, p in parents.items():
        if p >= 0:
            assert pos[p][1] > pos[v][1], "a parent must sit above its children"
            children.setdefault(p, []).append(v)
    for p, kids in children.items():
        xs = [pos[k][0] for k in kids]
        assert pos[p][0] == pytest.approx((min(xs) + max(xs)) / 2), "a parent is centred over its children"


@pytest.mark.parametrize("seed", range(6))
def test_tidy_layout_has_no_overlaps_parents_above_and_is_deterministic(seed):
    data = synthetic_log(n_nodes=random.Random(seed).randint(2, 400), seed=seed)
    parents = dict(zip(data.nodes["node"], data.nodes["parent"]))
    pos = tidy_positions(parents)
    assert_tidy(pos, parents)
    shuffled = dict(sorted(parents.items(), key=lambda kv: random.Random(seed).random()))
    assert tidy_positions(shuffled) == pos
    assert tidy_positions(parents) == pos


def test_tidy_layout_of_real_steps(log):
    for step in range(len(log.steps)):
        graph = step_graph(log, step)
        pos = tidy_layout(graph)
        assert_tidy(pos, dict(enumerate(parents_array(graph))))
        assert tidy_layout(step_graph(log, step)) == pos


def test_tidy_layout_of_500_nodes_takes_under_50_ms():
    data = synthetic_log(n_nodes=501, seed=7)
    parents = dict(zip(data.nodes["node"], data.nodes["parent"]))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        tidy_positions(parents)
        best = min(best, time.perf_counter() - start)
    assert best < 0.050, f"tidy layout of 501 nodes took {best * 1000:.1f} ms"


def test_tidy_layout_rejects_a_forest():
    with pytest.raises(ValueError, match="exactly one root"):
        tidy_positions({0: -1, 1: -1})


@pytest.mark.skipif(not has_dot(), reason="Graphviz 'dot' is not installed")
def test_dot_layout_puts_levels_in_order_without_overlap(log):
    graph = step_graph(log, 2)
    pos = dot_layout(graph)
    assert set(pos) == set(graph.nodes)
    assert_tidy_levels = {y for _, y in pos.values()}
    assert assert_tidy_levels == {-float(graph.nodes[v]["depth"]) for v in graph.nodes}
    assert all(pos[u][1] > pos[v][1] for u, v in graph.edges)


def test_dot_layout_without_dot_says_so_and_falls_back(log, monkeypatch, capsys):
    monkeypatch.setattr("treeviz.layout.shutil.which", lambda name: None)
    graph = step_graph(log, 2)
    assert dot_layout(graph) == tidy_layout(graph)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dot" in err and "tidy" in err


def test_a_500_node_tree_shows_labels_only_where_they_fit():
    data = synthetic_log(n_nodes=501, seed=3)
    scene = tree_scene(data, 0)
    assert scene.orientation == "lr"  # wide trees are drawn left to right
    assert len(scene.nodes) == 502  # 501 nodes + the bonus token
    nodes = scene.nodes
    on_path = nodes["kind"].isin([ROOT, ACCEPTED, BONUS])
    assert nodes.loc[on_path, "show_label"].all()
    assert nodes["show_label"].mean() > 0.5  # most labels still fit in a tall figure
    for _, level in nodes[nodes["show_label"] & ~on_path].groupby("x"):
        ys = np.sort(level["y"].to_numpy()) * scene.y_px
        assert (np.diff(ys) >= level["label_px"].to_numpy()[:-1]).all(), "labels on one level must not overlap"
    assert nodes.loc[nodes["show_label"], "label"].map(label_width_px).max() < scene.x_px


def test_labels_sit_off_the_edges_and_accepted_labels_are_never_dropped_or_covered():
    data = synthetic_log(n_nodes=40, seed=5, max_depth=3, accepted_depth=3)
    long = data.nodes.copy()
    long["token_text"] = ["a-very-long-token-text"] * len(long)  # every label crowds its neighbours
    data = SimpleNamespace(nodes=long, steps=data.steps, meta=data.meta)
    scene = tree_scene(data, 0, orientation="td")
    nodes = scene.nodes.set_index("node")
    on_path = nodes["kind"].isin([ROOT, ACCEPTED, BONUS])
    assert nodes.loc[on_path, "show_label"].all()
    assert not nodes.loc[~on_path, "show_label"].all()  # crowded: some others give way
    for _, level in nodes[nodes["show_label"]].groupby("y"):
        half = level["label"].map(label_width_px).to_numpy() / 2
        left, right = level["x"].to_numpy() * scene.x_px - half, level["x"].to_numpy() * scene.x_px + half
        order = np.argsort(left)
        assert (left[order][1:] >= right[order][:-1]).all(), "two labels on one level overlap"
    below = scene.edges[scene.edges["y0"] > scene.edges["y1"]]  # every edge runs downwards
    starts = below.merge(nodes.reset_index()[["x", "y", "show_label"]], left_on=["x0"], right_on=["x"])
    labelled = starts[starts["show_label"] & (starts["y"] > starts["y1"])]
    assert len(labelled) and (labelled["y0"] < labelled["y"] - 0.1).all(), "an edge starts on its node's label"


def test_a_label_of_punctuation_alone_is_drawn_larger_than_a_word():
    assert label_px(".") > label_px("␣the") and label_px("```") == label_px(",") and label_px("<|im_end|>") == label_px("a")
    data = synthetic_log(n_nodes=6, seed=1)
    nodes = data.nodes.copy()
    nodes["token_text"] = [".", "the", ",", "```", "x", "y", "z"][: len(nodes)]
    scene = tree_scene(SimpleNamespace(nodes=nodes, steps=data.steps, meta=data.meta), 0)
    sizes = dict(zip(scene.nodes["label"], scene.nodes["label_px"]))
    assert sizes["."] == sizes["```"] > sizes["the"]
    trace = tree_figure(SimpleNamespace(nodes=nodes, steps=data.steps, meta=data.meta), 0).data[3]
    assert max(trace.textfont.size) > min(trace.textfont.size)  # the figure draws them at those sizes


def test_projector_mode_enlarges_fonts_and_makes_room_for_every_label():
    data = synthetic_log(n_nodes=40, seed=5, max_depth=3, accepted_depth=3)
    long = data.nodes.copy()
    long["token_text"] = ["a-long-token"] * len(long)  # crowded: on a normal screen some labels give way
    data = SimpleNamespace(nodes=long, steps=data.steps, meta=data.meta)
    normal = tree_scene(data, 0, orientation="td")
    assert not normal.nodes["show_label"].all()
    treeviz.projector()
    try:
        big = tree_scene(data, 0, orientation="td")
        figure = tree_figure(data, 0, orientation="td")
    finally:
        treeviz.projector(False)
    assert big.nodes["show_label"].all(), "projector mode: a label on every node"
    assert big.nodes["label_px"].min() >= 1.5 * normal.nodes["label_px"].min()
    assert figure.layout.font.size >= 18 and big.width > normal.width
    assert tree_scene(data, 0, orientation="td").nodes["label_px"].max() == normal.nodes["label_px"].max()  # undone
