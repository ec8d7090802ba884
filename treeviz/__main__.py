"""``python -m treeviz html LOG_DIR... --out PAGE.html``: one standalone page for tree logs.

Bad input (a directory that is not a tree log, a torn or foreign file in one, an ``--out`` that is
a directory or can't be written) is one ``error: ...`` line and exit code 2, through the project's
one error boundary (``opttree_core.errors.report_errors``); the page is written atomically, so an
existing page is never left half-written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from opttree_core.atomic import check_file_destination
from opttree_core.errors import OptTreeError, report_errors

from .export import export_html
from .logs import load_logs


def html_page(logs: list[str], out: Path, title: str) -> Path:
    missing = [p for p in logs if not Path(p).is_dir()]
    if missing:
        raise OptTreeError(f"not a tree log directory: {missing[0]}")
    return export_html(load_logs(logs), check_file_destination(out), title=title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m treeviz", description=__doc__.split(":")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    html = sub.add_parser("html", help="write a standalone HTML page (plotly inline) for tree logs")
    html.add_argument("logs", nargs="+", help="log directories written by opttree_core")
    html.add_argument("--out", required=True)
    html.add_argument("--title", default="OPT-Tree Lab: every tree of this run")
    args = parser.parse_args(argv)
    page = report_errors(html_page, args.logs, Path(args.out), args.title)
    if page is None:
        return 2
    print(f"Every tree of this run, browsable offline: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
