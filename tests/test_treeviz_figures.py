"""treeviz figures, checked through their data (not pixels): tree, mask, icicle, token stream,
matplotlib tree and reproducible static files."""
import math
from pathlib import Path

import numpy as np
import pytest

from treeviz import style
from treeviz.graph import accepted_path, ancestor_matrix, parents_array, step_graph
from treeviz.logs import load_log, token_text_map, visible
from treeviz.mpl_tree import tree_figure_mpl
from treeviz.plotly_tree import (
    HOVER_COLUMNS,
    TREE_TRACES,
    attention_mask_figure,
    icicle_figure,
    side_figure,
    tree_figure,
)
from treeviz.static import save_figure
from treeviz.stream import DRAFTED, TARGET, stream_html, token_stream

DATA = Path(__file__).parent / "data" / "treeviz"


@pytest.fixture(scope="module")
def log():
    return load_log(DATA / "tiny-close-opt-tree-24")


@pytest.fixture(scope="module")
def real_log():
    """A `make demo` log of SmolLM2-135M: real token texts (spaces, newlines)."""
    return load_log(DATA / "smollm2-chat")


def traces(fig) -> dict:
    return {t.name: t for t in fig.data}


def test_tree_figure_has_one_marker_per_node_and_a_bonus_marker(log):
    for step in (0, 5, len(log.steps) - 1):
        fig = tree_figure(log, step)
        assert [t.name for t in fig.data][:3] == TREE_TRACES[:3] and len(fig.data) == len(TREE_TRACES)
        by_name = traces(fig)
        n_nodes = int(log.steps.iloc[step]["n_nodes"])
        assert len(by_name["nodes (colour = p̂)"].x) == n_nodes
        bonus = by_name["bonus token (target)"]
        assert len(bonus.x) == 1 and bonus.marker.symbol == "diamond" and bonus.marker.color == style.TARGET
        assert bonus.customdata[0][1] == log.steps.iloc[step]["bonus_token"]


def test_accepted_path_is_outlined_and_rejected_nodes_keep_their_p_hat_colour(log):
    step = int(np.argmax(log.steps["a"].to_numpy()))
    rows = log.nodes[log.nodes.step == step].sort_values("node")
    nodes = traces(tree_figure(log, step))["nodes (colour = p̂)"]
    accepted = rows["accepted"].to_numpy()
    outline = np.array(nodes.marker.line.color)
    opacity = np.array(nodes.marker.opacity)
    assert (outline[accepted] == style.ACCEPTED).all() and (outline[~accepted] != style.ACCEPTED).all()
    assert opacity.size == 1 and float(opacity) == 1.0  # no fading: p̂ 0.25 and 0.055 stay told apart
    assert (outline[~accepted] == style.REJECTED_OUTLINE).all()
    assert traces(tree_figure(log, step))["rejected edges"].line.dash == "dot"
    assert not nodes.showlegend  # the colour bar explains the fill; no one-colour swatch in the legend
    edges = traces(tree_figure(log, step))["accepted path"]
    n_segments = sum(x is None for x in edges.x)
    assert n_segments == log.steps.iloc[step]["a"] - 1  # the edges from the root down the path
    assert edges.line.color == style.ACCEPTED


def test_hover_data_holds_p_hat_and_log_p_hat_of_every_node(log):
    step = 4
    rows = log.nodes[log.nodes.step == step].sort_values("node")
    nodes = traces(tree_figure(log, step))["nodes (colour = p̂)"]
    custom = np.array(nodes.customdata, dtype=object)
    column = {name: i for i, name in enumerate(HOVER_COLUMNS)}
    np.testing.assert_allclose(custom[:, column["p_hat"]].astype(float), rows["p_hat"], rtol=1e-5)
    np.testing.assert_allclose(custom[:, column["log_p_hat"]].astype(float), np.log(rows["p_hat"]), rtol=1e-4)
    np.testing.assert_allclose(np.array(nodes.marker.color, dtype=float), rows["p_hat"], rtol=1e-6)
    assert custom[:, column["token"]].tolist() == rows["token"].tolist()
    assert custom[:, column["depth"]].tolist() == rows["depth"].tolist()
    assert custom[:, column["rank"]].tolist() == rows["rank"].tolist()
    assert custom[:, column["accepted"]].tolist() == ["yes" if a else "no" for a in rows["accepted"]]
    assert "p̂" in nodes.hovertemplate and "log p̂" in nodes.hovertemplate


def test_labels_make_whitespace_visible(real_log):
    fig = tree_figure(real_log, 0)
    nodes = traces(fig)["nodes (colour = p̂)"]
    root = real_log.nodes[(real_log.nodes.step == 0) & (real_log.nodes.node == 0)]["token_text"].item()
    assert root == "\n" and nodes.text[0] == "↵"
    assert all("\n" not in t and " " not in t for t in nodes.text)


def test_attention_mask_heatmap_matches_the_ancestor_matrix(log):
    step = 6
    graph = step_graph(log, step, bonus=False)
    z = np.array(attention_mask_figure(log, step).data[0].z)
    mask = ancestor_matrix(parents_array(graph))
    np.testing.assert_array_equal(z > 0, mask)
    path = accepted_path(graph)
    assert (z[np.ix_(path, path)][mask[np.ix_(path, path)]] == 2).all()


def test_icicle_areas_are_p_hat(log):
    step = 2
    icicle = icicle_figure(log, step).data[0]
    rows = log.nodes[log.nodes.step == step].sort_values("node")
    np.testing.assert_allclose(np.array(icicle.values[1:]), rows["p_hat"].to_numpy()[1:], rtol=1e-5)
    assert icicle.values[0] == 1.0 and icicle.branchvalues == "total"
    parents = [int(p) if p else -1 for p in icicle.parents]
    assert parents == rows["parent"].tolist()
    assert [t.type for t in side_figure(log, step).data] == ["heatmap", "icicle"]


def test_token_stream_marks_drafted_and_target_tokens(real_log):
    tokens = token_stream(real_log)
    assert [t.token for t in tokens] == real_log.meta["token_ids"]
    assert len(tokens) == real_log.steps["a"].sum()
    for step, rows in real_log.steps.iterrows():
        mine = [t for t in tokens if t.step == step]
        assert [t.source for t in mine] == [DRAFTED] * (int(rows["a"]) - 1) + [TARGET]
        assert {t.a for t in mine} == {rows["a"]}
    page = stream_html(tokens)
    assert page.count('class="tv-step"') == len(real_log.steps)
    assert page.count("tv-tok tv-target") == len(real_log.steps)
    assert 'title="step 0 · A = 3' in page


def test_token_texts_fall_back_to_the_id_or_a_tokenizer(log):
    bare = type(log)(nodes=log.nodes.drop(columns="token_text"), steps=log.steps, meta=log.meta)
    assert token_stream(bare)[0].text.startswith("#")

    class Tokenizer:
        def decode(self, ids):
            return f"w{ids[0]}"

    assert token_text_map(bare, Tokenizer())[int(log.nodes.token.iloc[0])] == f"w{log.nodes.token.iloc[0]}"


def test_matplotlib_tree_draws_every_node(log):
    step = 3
    fig = tree_figure_mpl(log, step)
    ax = fig.axes[0]
    n_nodes = int(log.steps.iloc[step]["n_nodes"])
    drawn = sum(len(c.get_offsets()) for c in ax.collections if type(c).__name__ == "PathCollection")
    assert drawn == n_nodes + 1  # every node (none faded: rejected ones keep their colour) and the bonus token
    texts = [t.get_text() for t in ax.texts]
    assert any("\n" in t for t in texts)  # a drafted node's p̂ printed under its token
    assert ax.get_legend() is not None  # what the rings, edges and diamond mean
    texts = [t.get_text() for t in ax.texts]
    assert visible(token_text_map(log)[int(log.steps.iloc[step]["bonus_token"])]) in texts


def test_static_exports_are_byte_identical_and_embed_type42_fonts(log, tmp_path):
    first = save_figure(tree_figure_mpl(log, 1), tmp_path / "a" / "tree", ("pdf", "png", "svg"))
    second = save_figure(tree_figure_mpl(log, 1), tmp_path / "b" / "tree", ("pdf", "png", "svg"))
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), f"{a.suffix} export is not reproducible"
    pdf = first[0].read_bytes()
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType (Type 42) embedded, no Type 3
    assert b"CreationDate" not in pdf and b"Producer" not in pdf
    assert b"Software" not in first[1].read_bytes()


def test_unknown_step_says_which_steps_exist(log):
    with pytest.raises(IndexError, match=r"this log has \d+ steps"):
        tree_figure(log, len(log.steps))
    assert math.isfinite(float(log.steps["ea"].iloc[0]))


def test_token_texts_are_shown_literally_not_as_markup(log):
    nodes, step = log.nodes.copy(), 2
    token_of = nodes[nodes.step == step].set_index("node")["token"]
    nodes.loc[nodes.token == token_of[1], "token_text"] = "</s>"
    nodes.loc[nodes.token == token_of[0], "token_text"] = "$x_{$"
    data = type(log)(nodes=nodes, steps=log.steps, meta=log.meta)
    trace = traces(tree_figure(data, step))["nodes (colour = p̂)"]
    assert trace.customdata[1][0] == "&lt;/s&gt;"  # plotly would read a raw </s> as a tag
    assert trace.text[0] == "$x_{$" and "</s>" not in trace.text
    fig = tree_figure_mpl(data, step)
    fig.canvas.draw()  # a "$" in a token must not be parsed as mathtext
    assert "$x_{$" in [t.get_text() for t in fig.axes[0].texts]
