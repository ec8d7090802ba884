"""``make html``: execute the notebooks and render each to one HTML page that works offline.

    .venv/bin/python notebooks/render_html.py [--fast] [--out out/html] [NOTEBOOK.ipynb ...]

Each notebook is executed (nbconvert's ExecutePreprocessor) in a fresh kernel (``OPTTREE_HTML=1``, and
``OPTTREE_FAST=1`` with ``--fast``), then exported with nbconvert through the template in
``notebooks/html_template/offline`` (JupyterLab's, minus every CDN script). Plotly figures carry
plotly.js inside the notebook (``treeviz.teaching.offline_plotly``).

Widgets: their JavaScript (the ipywidgets HTML manager and its widget state) can't
be inlined offline, so each widget output is replaced by a note, and the notebooks' own
``treeviz.teaching.show_widget`` shows the widget's figures as static copies right after it.
A page that still references a network script is an error. ``index.html`` links the pages.
"""
from __future__ import annotations

import argparse
import html
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import ExecutePreprocessor

from treeviz.teaching import EXPLORER_KEY

HERE = Path(__file__).resolve().parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = ('<div class="tv-widget-note" style="border:1px dashed #999;padding:6px;color:#555">'
               "<i>Interactive widget: it needs a live kernel (open this notebook in JupyterLab). Its JavaScript "
               "can't be embedded in an offline page, so the figures it showed when the notebook ran follow "
               "as static copies.</i></div>")
EXTERNAL = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.IGNORECASE)


def execute(path: Path, timeout: int = 1200) -> nbformat.NotebookNode:
    """Run every cell of the notebook at ``path`` in a fresh kernel, in its own directory."""
    nb = nbformat.read(path, as_version=4)
    runner = ExecutePreprocessor(timeout=timeout, kernel_name="python3", store_widget_state=False)
    runner.preprocess(nb, {"metadata": {"path": str(path.parent)}})
    return nb


def replace_widget_views(nb: nbformat.NotebookNode) -> int:
    """Swap each explorer's widget output (it needs a live kernel) for a note and drop other widget
    outputs (progress bars, frozen at their first frame); returns how many explorers were swapped."""
    swapped = 0
    for cell in nb.cells:
        kept = []
        for output in cell.get("outputs", []):
            if WIDGET_VIEW not in output.get("data", {}):
                kept.append(output)
            elif EXPLORER_KEY in output.get("metadata", {}):
                output["data"] = {"text/html": WIDGET_NOTE, "text/plain": "[interactive widget]"}
                kept.append(output)
                swapped += 1
        if "outputs" in cell:
            cell["outputs"] = kept
    return swapped


def to_html(nb: nbformat.NotebookNode) -> str:
    exporter = HTMLExporter(template_name="offline", extra_template_basedirs=[str(HERE / "html_template")])
    body, _ = exporter.from_notebook_node(nb)
    return body


def check_offline(page: str, name: str) -> None:
    found = EXTERNAL.search(page)
    if found:
        raise SystemExit(f"{name}: the page loads something from the network: {found.group(0)[:120]}")


def render(path: Path, out_dir: Path) -> Path:
    """Execute one notebook and write ``out_dir/NAME.html``."""
    nb = execute(path)
    replace_widget_views(nb)
    page = to_html(nb)
    check_offline(page, path.name)
    out = out_dir / f"{path.stem}.html"
    out.write_text(page, encoding="utf-8")
    return out


def write_index(pages: list[Path], out_dir: Path) -> Path:
    items = "".join(f'<li><a href="{html.escape(p.name)}">{html.escape(p.stem)}</a></li>' for p in pages)
    index = out_dir / "index.html"
    index.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>OPT-Tree Lab notebooks</title>"
                     f"</head><body><h1>OPT-Tree Lab notebooks</h1><ol>{items}</ol></body></html>", encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/[0-9][0-9]_*.ipynb")
    p.add_argument("--out", type=Path, default=Path("out/html"))
    p.add_argument("--fast", action="store_true", help="fast mode (OPTTREE_FAST=1): small budgets, as in CI")
    args = p.parse_args(argv)
    os.environ["OPTTREE_HTML"] = "1"  # the kernels inherit the environment
    if args.fast:
        os.environ["OPTTREE_FAST"] = "1"
    paths = args.notebooks or sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"no such notebook: {missing[0]}")
    args.out.mkdir(parents=True, exist_ok=True)
    pages = []
    for path in paths:
        start = time.perf_counter()
        pages.append(render(path, args.out))
        print(f"{pages[-1]} ({time.perf_counter() - start:.0f} s)", flush=True)
    print(write_index(pages, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
