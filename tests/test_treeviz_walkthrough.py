"""One decoding step end to end as frames (treeviz.walkthrough): each draft layer adds exactly its
nodes, verify names the target's token under every node, accept draws the accepted path, bonus adds
the target's own token; the HTML page draws the frames in a real browser and steps through them."""
from pathlib import Path

import numpy as np
import pytest

from treeviz.browser import find_chromium
from treeviz.export import export_html, runs_in_page
from treeviz.logs import load_log, token_text_map
from treeviz.walkthrough import walkthrough_figure

DATA = Path(__file__).parent / "data" / "treeviz"


@pytest.fixture(scope="module")
def log():
    return load_log(DATA / "smollm2-chat")


def _deepest_step(log) -> int:
    depth = log.nodes.groupby("step")["depth"].max()
    return int(depth.idxmax())


def test_frames_add_one_draft_layer_at_a_time_then_verify_accept_and_bonus(log):
    step = _deepest_step(log)
    nodes = log.nodes[log.nodes["step"] == step]
    layers = int(nodes["depth"].max())
    figure = walkthrough_figure(log, step, token_text_map(log))
    names = [f.name for f in figure.frames]
    assert names == [f"draft layer {d}" for d in range(1, layers + 1)] + ["verify", "accept", "bonus"]
    for d, frame in enumerate(figure.frames[:layers], 1):
        drawn = frame.data[3]
        assert len(drawn.x) == int((nodes["depth"] <= d).sum()), f"layer {d}: the tree so far, root included"
        assert not frame.data[1].x and not frame.data[4].x, "nothing is accepted before the target verifies"
        z = np.array(frame.data[5].z)
        assert z.shape == (len(nodes), len(nodes)) and z.max() <= 1
        assert int((z.sum(axis=1) > 0).sum()) == len(drawn.x), "the mask holds the drafted nodes' rows only"
    verify, accept, bonus = figure.frames[layers:]
    assert all("→" in t for t in verify.data[3].text), "verify: the target's token under every node"
    step_a = int(log.steps.iloc[step]["a"])
    assert ("ONE target forward" in verify.layout.title.text and f"A = {step_a}" in bonus.layout.title.text)
    assert (len(accept.data[1].x) > 0) == (step_a > 1) and np.array(accept.data[5].z).max() == 2
    assert len(bonus.data[4].x) == 1 and not accept.data[4].x, "the bonus token comes last"


def test_a_step_that_drafted_nothing_still_walks_through_verify_and_bonus(log):
    steps, nodes = log.steps.copy(), log.nodes.copy()
    steps.loc[steps.index[0], ["n_nodes", "a"]] = [1, 1]  # step 0: the root verified alone (opt-tree-auto's n* = 0)
    root_only = type(log)(nodes=nodes[(nodes["step"] > 0) | (nodes["node"] == 0)], steps=steps, meta=log.meta)
    figure = walkthrough_figure(root_only, 0)
    assert [f.name for f in figure.frames] == ["verify", "accept", "bonus"]
    assert len(figure.frames[-1].data[4].x) == 1 and "A = 1" in figure.frames[-1].layout.title.text


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (CI installs it)")
def test_in_chromium_the_page_draws_the_walkthrough_and_its_slider_steps_through_it(tmp_path, log):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    path = export_html({"chat": log}, tmp_path / "page.html")
    walk = runs_in_page(path)[0]["walk"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            page.wait_for_function("() => (document.getElementById('tv-walk-0')._transitionData || {})._frames")
            count = page.evaluate("() => document.getElementById('tv-walk-0')._transitionData._frames.length")
            assert count == len(walk["frames"]) >= 4
            first = page.evaluate("() => document.querySelectorAll('#tv-walk-0 .scatterlayer path.point').length")
            page.evaluate("() => Plotly.animate('tv-walk-0', ['bonus'], {frame: {duration: 0, redraw: true}, mode: 'immediate'})")
            page.wait_for_function("() => document.querySelector('#tv-walk-0 .gtitle').textContent.includes('bonus')")
            last = page.evaluate("() => document.querySelectorAll('#tv-walk-0 .scatterlayer path.point').length")
            assert 0 < first < last, (first, last)  # the first layer alone, then every node and the bonus token
            assert errors == []
        finally:
            browser.close()
