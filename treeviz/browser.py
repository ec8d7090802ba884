"""Open an HTML file in headless Chromium: take a screenshot and collect its console output.

Used to check exported pages the way a person sees them (tests, CI) and to get a PNG of a
page. JavaScript errors are read from Chromium's console log (``--enable-logging=stderr``):
uncaught exceptions appear there as ``"Uncaught ...Error: ..."``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]
CONSOLE = re.compile(r":INFO:CONSOLE[^\]]*\] (.*)$")
ERROR = re.compile(r"\bUncaught\b|\b[A-Za-z]*Error\b")


@dataclass(frozen=True)
class PageCheck:
    """What Chromium saw: the screenshot, every console message, and those that are errors."""

    png: Path
    console: list[str]
    errors: list[str]


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def open_page(html: str | os.PathLike, png: str | os.PathLike, width: int = 1280, height: int = 1000,
              budget_ms: int = 8000, timeout_s: float = 90.0, fragment: str = "") -> PageCheck:
    """Load ``html`` (with ``#fragment`` when given) in headless Chromium, screenshot it to ``png``,
    and collect its console messages."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found (looked for: " + ", ".join(CHROMIUM_NAMES) + ")")
    png = Path(png).resolve()
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="treeviz-chromium-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
               f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}",
               Path(html).resolve().as_uri() + (f"#{fragment}" if fragment else "")]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    console = [m.group(1) for line in proc.stderr.splitlines() if (m := CONSOLE.search(line))]
    if not png.is_file():
        tail = "\n".join(proc.stderr.splitlines()[-5:])
        raise RuntimeError(f"Chromium wrote no screenshot (exit {proc.returncode}): {tail}")
    return PageCheck(png=png, console=console, errors=[m for m in console if ERROR.search(m)])


def distinct_colours(png: str | os.PathLike) -> int:
    """How many distinct RGB colours a PNG has (a blank page has one or two)."""
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))[..., :3]  # (h, w, 3) floats
    codes = np.round(pixels * 255).astype(np.uint32).reshape(-1, 3)
    return len(np.unique(codes[:, 0] << 16 | codes[:, 1] << 8 | codes[:, 2]))
