"""treeviz HTML export: one self-contained page with every step; opened in headless Chromium,
it draws something and logs no JavaScript error."""
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from treeviz.browser import distinct_colours, find_chromium, open_page
from treeviz.export import export_html, runs_in_page
from treeviz.logs import load_log

DATA = Path(__file__).parent / "data" / "treeviz"
needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (CI installs it)")


@pytest.fixture(scope="module")
def logs():
    return {name: load_log(DATA / name) for name in ("smollm2-chat", "tiny-close-opt-tree-12")}


@pytest.fixture(scope="module")
def page(logs, tmp_path_factory):
    return export_html(logs, tmp_path_factory.mktemp("html") / "run.html", title="test page")


def test_page_is_standalone_with_every_step(page, logs):
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", text)  # nothing to fetch: it opens offline
    assert "Plotly" in text and len(text) > 3_000_000  # plotly.js inline
    runs = runs_in_page(page)
    assert [len(r["steps"]) for r in runs] == [len(d.steps) for d in logs.values()]
    first = runs[0]["steps"][0]
    assert [t["name"] for t in first["tree"]["data"]][:2] == ["rejected edges", "accepted path"]
    assert [s["a"] for s in runs[0]["steps"]] == logs["smollm2-chat"].steps["a"].tolist()
    assert text.count('class="tv-run"') == 2 and 'id="tv-run-menu"' in text
    assert "Regular" in text  # the token stream


def test_page_escapes_script_endings(tmp_path, logs):
    data = logs["tiny-close-opt-tree-12"]
    nodes = data.nodes.copy()
    nodes.loc[nodes.index[1], "token_text"] = "</script><b>"
    path = export_html(type(data)(nodes=nodes, steps=data.steps, meta=data.meta), tmp_path / "x.html")
    text = path.read_text(encoding="utf-8")
    assert "</script><b>" not in text and runs_in_page(path)


def test_max_steps_caps_what_is_browsable_and_says_so(tmp_path, logs):
    path = export_html(logs["tiny-close-opt-tree-12"], tmp_path / "x.html", max_steps=3)
    assert len(runs_in_page(path)[0]["steps"]) == 3 and "first 3 steps browsable" in path.read_text(encoding="utf-8")


@needs_chromium
def test_chromium_renders_the_page_without_javascript_errors(page, tmp_path):
    check = open_page(page, tmp_path / "shot.png", width=1400, height=1100)
    assert check.errors == [], f"JavaScript errors: {check.errors}"
    assert distinct_colours(check.png) > 200, "the screenshot looks blank"
    pixels = matplotlib.image.imread(str(check.png))[..., :3]
    top_of_colour_bar = np.all(np.abs(pixels - np.array([253, 231, 37]) / 255) < 0.03, axis=-1)
    assert top_of_colour_bar.sum() > 50, "plotly drew no p̂ colour bar: the figures did not render"


@needs_chromium
def test_the_browser_check_catches_errors_and_blank_pages(tmp_path):
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>notAFunction();</script></body></html>")
    check = open_page(broken, tmp_path / "broken.png", width=400, height=300)
    assert any("Uncaught ReferenceError" in e for e in check.errors)
    assert distinct_colours(check.png) <= 2


def test_page_names_the_draft_vocabulary(tmp_path, logs):
    data = logs["tiny-close-opt-tree-12"]
    full = export_html(data, tmp_path / "full.html").read_text(encoding="utf-8")
    subset = type(data)(nodes=data.nodes, steps=data.steps, meta={**data.meta, "draft_vocab": 8192})
    text = export_html(subset, tmp_path / "subset.html").read_text(encoding="utf-8")
    assert "draft vocabulary" not in full and "(8192-token draft vocabulary)" in text


def _auto_like(data):
    """``data`` whose first two steps drafted nothing (the root alone), as opt-tree-auto's often do."""
    steps, nodes = data.steps.copy(), data.nodes.copy()
    steps.loc[steps.index[:2], "n_nodes"] = 1
    nodes = nodes[(nodes["step"] > 1) | (nodes["node"] == 0)]
    return type(data)(nodes=nodes, steps=steps, meta={**data.meta, "policy": "opt-tree-auto",
                                                      "policy_config": {"max_nodes": 8, "profile": None},
                                                      "latency_profile": {"device": "AMD EPYC", "threads": 2}})


def test_a_run_opens_on_its_first_drafted_step_and_names_its_profile(tmp_path, logs):
    path = export_html(_auto_like(logs["tiny-close-opt-tree-12"]), tmp_path / "auto.html")
    text = path.read_text(encoding="utf-8")
    assert runs_in_page(path)[0]["start"] == 2
    assert "profile=None" not in text and "profile=this machine&#x27;s (AMD EPYC, 2 threads)" in text


@needs_chromium
def test_in_chromium_arrow_keys_move_one_step_and_the_page_opens_where_a_tree_was_drafted(tmp_path, logs):
    """In a real browser: the page opens on the first step that drafted; → moves one step whether the
    page or the slider has focus (the slider's own arrow handling and the page's used to add up)."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    path = export_html(_auto_like(logs["tiny-close-opt-tree-12"]), tmp_path / "auto.html")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(path.as_uri())
            label = page.locator("#tv-label")
            assert label.text_content().startswith("step 2 /")
            page.keyboard.press("ArrowRight")
            assert label.text_content().startswith("step 3 /")
            page.locator("#tv-slider").focus()
            page.keyboard.press("ArrowRight")
            assert label.text_content().startswith("step 4 /")
            page.keyboard.press("ArrowLeft")
            assert label.text_content().startswith("step 3 /")
        finally:
            browser.close()


OVERLAPS_JS = """() => {
  const box = e => e.getBoundingClientRect();
  const meet = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  const found = [];
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    const legend = plot.querySelector('g.legend');
    if (!legend) continue;
    const titles = [...plot.querySelectorAll('g.annotation, g.g-gtitle')].filter(t => t.textContent.trim());
    for (const t of titles) if (meet(box(legend), box(t))) found.push(t.textContent.trim().slice(0, 40));
  }
  return found;
}"""


@needs_chromium
def test_in_chromium_no_legend_covers_a_panel_title(tmp_path, logs):
    """Issue 27: the "A = E(A) + 1" legend covered the heatmap's panel title on the page."""
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    path = export_html(logs, tmp_path / "p.html")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.goto(path.as_uri())
            page.wait_for_selector("g.legend")
            assert page.locator("g.legend").count() >= 1
            assert page.evaluate(OVERLAPS_JS) == []
        finally:
            browser.close()


# Logs, once plotly has drawn, where each figure's title starts relative to the figure's top edge.
TITLE_PROBE = """<script>setTimeout(() => document.querySelectorAll('.js-plotly-plot').forEach((gd, i) => {
  const title = gd.querySelector('.gtitle');
  const top = title ? title.getBoundingClientRect().top - gd.getBoundingClientRect().top : NaN;
  console.log(`TITLE ${i} ${top.toFixed(1)} ${title ? title.textContent : ''}`);
}), 4000);</script>"""


def _title_tops(html_text: str, tmp_path) -> list[tuple[float, str]]:
    probe = tmp_path / "titles.html"
    probe.write_text(html_text.replace("</body>", TITLE_PROBE + "</body>"), encoding="utf-8")
    check = open_page(probe, tmp_path / "titles.png", width=1400, height=1400, budget_ms=10000)
    seen = [re.match(r'"TITLE \d+ (\S+) (.*)", source', m) for m in check.console]
    return [(float(m[1]), m[2]) for m in seen if m]


@needs_chromium
def test_every_title_line_is_inside_its_figure_in_chromium(page, logs, tmp_path):
    """A two-line title (``<br>``) anchored at its top was drawn with its first line cut off at the
    figure's edge (the explorer's "step 2 · 2 drafted nodes")."""
    from treeviz.logs import token_text_map
    from treeviz.plotly_tree import tree_figure
    from treeviz.walkthrough import walkthrough_figure

    data = logs["smollm2-chat"]
    figures = [tree_figure(data, 2), tree_figure(data, 2, height=300), walkthrough_figure(data, 2, token_text_map(data))]
    standalone = "<html><body>" + "".join(f.to_html(full_html=False, include_plotlyjs=i == 0)
                                          for i, f in enumerate(figures)) + "</body></html>"
    for html_text, where in ((standalone, "tree and walkthrough figures"), (page.read_text(encoding="utf-8"), "page")):
        tops = _title_tops(html_text, tmp_path)
        tops = [(top, text) for top, text in tops if text]  # the icicle has no title
        assert len(tops) >= 3, f"{where}: fewer titled figures drawn than expected: {tops}"
        assert all(top >= 0 for top, _ in tops), f"{where}: a title starts above its figure: {tops}"
