"""A standalone HTML page for one or more runs: every step's tree browsable, offline.

The page holds plotly.js inline (no network needed), each step's tree and side figures
(tree-attention mask, p̂ icicle) as JSON, the run's token stream, its E(A)-vs-A heatmap
and its timeline. A slider, ◀ ▶ buttons, a play button, the arrow keys, and clicks on the
token stream move between steps; a menu picks the run when there are several. The address
remembers the view: ``page.html#run=1&step=5`` opens on that run and step.
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

import plotly.io as pio
import plotly.offline

from opttree_core.atomic import write_text
from opttree_core.errors import OptTreeError

from .analysis import summarize_logs
from .analysis_plots import ea_heatmap_figure, timeline_figure
from .logs import as_named, token_text_map
from .plotly_tree import side_spec, tree_spec
from .scene import tree_scene
from .stream import STREAM_CSS, stream_html, token_stream
from .walkthrough import walkthrough_figure

PAGE_CSS = """
body { font-family: 'DejaVu Sans', Arial, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 15px; margin: 18px 0 6px; }
.tv-facts { color: #444; font-size: 13px; margin-bottom: 8px; }
.tv-controls { position: sticky; top: 0; background: #fff; padding: 6px 0; z-index: 5;
               display: flex; gap: 8px; align-items: center; border-bottom: 1px solid #ddd; }
.tv-controls input[type=range] { width: 420px; }
.tv-row { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
.tv-run { display: none; } .tv-run.tv-shown { display: block; }
.tv-stream .tv-step { cursor: pointer; }
"""


def _figure_json(fig) -> dict:
    """A figure as plain JSON."""
    return json.loads(pio.to_json(fig, validate=False, engine="json"))


def run_payload(data, tokenizer=None, max_steps: int | None = None) -> dict:
    """Everything the page shows for one run, as JSON-ready values."""
    texts = token_text_map(data, tokenizer)
    n = len(data.steps) if max_steps is None else min(max_steps, len(data.steps))
    steps = [{"tree": tree_spec(tree_scene(data, s, texts=texts)), "side": side_spec(data, s, texts=texts),
              "a": int(data.steps.iloc[s]["a"]), "ea": float(data.steps.iloc[s]["ea"])} for s in range(n)]
    start = first_drafted_step(data, n)
    return {"steps": steps, "start": start, "heatmap": _figure_json(ea_heatmap_figure([data])),
            "timeline": _figure_json(timeline_figure(data)), "walk": _figure_json(walkthrough_figure(data, start, texts))}


def first_drafted_step(data, n: int) -> int:
    """The step a page opens on: the first of the ``n`` shown whose tree drafted a node (a step that
    drafted nothing, as opt-tree-auto's often do, shows a root alone and a one-cell mask), else 0."""
    drafted = (data.steps["n_nodes"].to_numpy()[:n] > 1).nonzero()[0]
    return int(drafted[0]) if len(drafted) else 0


def _policy_settings(meta: dict) -> str:
    """The policy's config as KEY=VALUE; an unset latency profile says which one the run used."""
    config = dict(meta.get("policy_config") or {})
    used = meta.get("latency_profile")
    if "profile" in config and config["profile"] is None and isinstance(used, dict):
        config["profile"] = f"this machine's ({used.get('device', '?')}, {used.get('threads', '?')} threads)"
    return ", ".join(f"{k}={v}" for k, v in config.items())


def _facts(name: str, data, shown: int) -> str:
    row = summarize_logs({name: data}).iloc[0]
    meta = data.meta
    config = _policy_settings(meta)
    vocab = f" ({meta['draft_vocab']}-token draft vocabulary)" if meta.get("draft_vocab") else ""
    facts = [f"target <b>{html.escape(str(row['target']))}</b>",
             f"draft <b>{html.escape(str(row['draft']))}</b>{vocab}",
             f"policy <b>{html.escape(str(row['policy']))}</b> ({html.escape(config)})",
             f"{row['steps']} steps, {row['tokens']} tokens", f"MAL {row['mal']:.2f}",
             f"{row['tokens_per_s']:.1f} tokens/s"]
    note = f" <i>(first {shown} steps browsable)</i>" if shown < row["steps"] else ""
    prompt = html.escape(str(meta.get("prompt") or ""))
    return (f'<div class="tv-facts">{" · ".join(facts)}{note}</div>'
            + (f'<div class="tv-facts">prompt: <q>{prompt}</q></div>' if prompt else ""))


def _run_section(index: int, name: str, data, tokenizer, shown: int, walk_step: int) -> str:
    stream = stream_html(token_stream(data, tokenizer), css=False)
    return f"""<section class="tv-run" id="tv-run-{index}">
<h1>{html.escape(name)}</h1>{_facts(name, data, shown)}
<div class="tv-row"><div id="tv-tree-{index}"></div><div id="tv-side-{index}"></div></div>
<h2>Token stream</h2>{stream}
<h2>One step, end to end (step {walk_step}: draft layers → attention mask → the target's choices → accepted path → bonus token; ▶ or drag the slider)</h2>
<div id="tv-walk-{index}"></div>
<h2>This run</h2><div class="tv-row"><div id="tv-heat-{index}"></div><div id="tv-time-{index}"></div></div>
</section>"""


def _controls(names: list[str]) -> str:
    options = "".join(f'<option value="{i}">{html.escape(n)}</option>' for i, n in enumerate(names))
    menu = f'<select id="tv-run-menu">{options}</select>' if len(names) > 1 else ""
    return f"""<div class="tv-controls">{menu}
<button id="tv-prev" title="previous step (←)">◀</button><button id="tv-play" title="play / pause">▶ play</button>
<button id="tv-next" title="next step (→)">▶</button><input id="tv-slider" type="range" min="0" max="0" value="0">
<span id="tv-label"></span></div>"""


PAGE_JS = r"""
const TV = { run: 0, step: 0, timer: null, drawn: {} };
function tvShow(run, step) {
  const r = RUNS[run], n = r.steps.length;
  step = Math.max(0, Math.min(n - 1, step));
  if (run !== TV.run || !TV.drawn[run]) {
    document.querySelectorAll('.tv-run').forEach((s, i) => s.classList.toggle('tv-shown', i === run));
    if (!TV.drawn[run]) {
      Plotly.newPlot('tv-heat-' + run, r.heatmap.data, r.heatmap.layout, CONFIG);
      Plotly.newPlot('tv-time-' + run, r.timeline.data, r.timeline.layout, CONFIG);
      Plotly.newPlot('tv-walk-' + run, r.walk.data, r.walk.layout, CONFIG)
        .then(gd => Plotly.addFrames(gd, r.walk.frames));
      TV.drawn[run] = true;
    }
  }
  TV.run = run; TV.step = step;
  history.replaceState(null, '', '#run=' + run + '&step=' + step);
  if (menu) menu.value = String(run);
  const s = r.steps[step];
  Plotly.react('tv-tree-' + run, s.tree.data, s.tree.layout, CONFIG);
  Plotly.react('tv-side-' + run, s.side.data, s.side.layout, CONFIG);
  const slider = document.getElementById('tv-slider');
  slider.max = n - 1; slider.value = step;
  document.getElementById('tv-label').textContent =
    'step ' + step + ' / ' + (n - 1) + ' · A = ' + s.a + ' · E(A) = ' + s.ea.toFixed(2);
  document.querySelectorAll('#tv-run-' + run + ' .tv-step').forEach(el =>
    el.classList.toggle('tv-current', Number(el.dataset.step) === step));
}
function tvPlay() {
  const button = document.getElementById('tv-play');
  if (TV.timer) { clearInterval(TV.timer); TV.timer = null; button.textContent = '▶ play'; return; }
  button.textContent = '❚❚ pause';
  TV.timer = setInterval(() => {
    const n = RUNS[TV.run].steps.length;
    tvShow(TV.run, (TV.step + 1) % n);
  }, 900);
}
document.getElementById('tv-slider').addEventListener('input', e => tvShow(TV.run, Number(e.target.value)));
document.getElementById('tv-prev').addEventListener('click', () => tvShow(TV.run, TV.step - 1));
document.getElementById('tv-next').addEventListener('click', () => tvShow(TV.run, TV.step + 1));
document.getElementById('tv-play').addEventListener('click', tvPlay);
const menu = document.getElementById('tv-run-menu');
if (menu) menu.addEventListener('change', e => tvShow(Number(e.target.value), RUNS[Number(e.target.value)].start));
document.addEventListener('keydown', e => {
  if (e.target.tagName === 'SELECT' || e.target.tagName === 'INPUT') return;  // the slider steps by itself
  if (e.key === 'ArrowLeft') tvShow(TV.run, TV.step - 1);
  if (e.key === 'ArrowRight') tvShow(TV.run, TV.step + 1);
});
document.querySelectorAll('.tv-stream .tv-step').forEach(el => el.addEventListener('click', () =>
  tvShow(Number(el.closest('.tv-run').id.split('-').pop()), Number(el.dataset.step))));
const start = new URLSearchParams(location.hash.slice(1));  // e.g. page.html#run=1&step=5
const startRun = Math.min(RUNS.length - 1, Number(start.get('run')) || 0);
tvShow(startRun, start.has('step') ? Number(start.get('step')) : RUNS[startRun].start);
"""


def runs_in_page(path: str | os.PathLike) -> list:
    """The runs' payloads (``run_payload``) embedded in a page written by ``export_html``."""
    text = Path(path).read_text(encoding="utf-8")
    start = text.index("const RUNS = ") + len("const RUNS = ")
    return json.loads(text[start:text.index(";\nconst CONFIG", start)])  # JSON reads the page's "<\\/" as "</"


def _script_json(value) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def export_html(logs, path: str | os.PathLike, title: str = "OPT-Tree Lab — tree log", tokenizer=None,
                max_steps: int | None = None) -> Path:
    """Write one self-contained HTML page for a log (or a dict/list of logs) and return its path.

    ``max_steps`` caps the browsable steps per run (for very long runs); the page says so."""
    named = as_named(logs)
    if not named:
        raise OptTreeError("export_html needs at least one log")
    payloads, sections = [], []
    for i, (name, data) in enumerate(named.items()):
        payload = run_payload(data, tokenizer, max_steps)
        if not payload["steps"]:
            raise OptTreeError(f"run {name!r} has no steps to show")
        payloads.append(payload)
        sections.append(_run_section(i, name, data, tokenizer, len(payload["steps"]), payload["start"]))
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{PAGE_CSS}{STREAM_CSS}</style>
<script>{plotly.offline.get_plotlyjs()}</script></head>
<body>{_controls(list(named))}{''.join(sections)}
<script>const RUNS = {_script_json(payloads)};
const CONFIG = {{displaylogo: false, responsive: false}};
{PAGE_JS}</script></body></html>
"""
    return _write_page(Path(path), page)


def _write_page(path: Path, page: str) -> Path:
    """Write the page atomically (``opttree_core.atomic.write_text``): an OS error is one OptTreeError
    line and leaves neither a half page nor a temporary file behind."""
    return write_text(path, page)


