"""``python -m treeviz html LOG_DIR... --out PAGE.html``: one standalone page for tree logs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .export import export_html
from .logs import load_logs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m treeviz", description=__doc__.split(":")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    html = sub.add_parser("html", help="write a standalone HTML page (plotly inline) for tree logs")
    html.add_argument("logs", nargs="+", help="log directories written by opttree_core")
    html.add_argument("--out", required=True)
    html.add_argument("--title", default="OPT-Tree Lab: every tree of this run")
    args = parser.parse_args(argv)
    missing = [p for p in args.logs if not (Path(p) / "nodes.parquet").is_file()]
    if missing:
        print(f"error: not a tree log: {missing[0]}", file=sys.stderr)
        return 2
    page = export_html(load_logs(args.logs), Path(args.out), title=args.title)
    print(f"Every tree of this run, browsable offline: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
