"""Facts about the code's shape that docs/architecture.md states: small modules and functions, one
growth loop, the tools above the core, a torch-free record schema."""
import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("opttree_core/**/*.py"), *ROOT.glob("treeviz/*.py"), *ROOT.glob("figures/*.py")])


def test_modules_stay_under_400_lines_and_functions_under_60():
    long_modules = [f"{p.relative_to(ROOT)}: {n}" for p in SOURCES if (n := len(p.read_text().splitlines())) > 400]
    long_functions = [f"{p.relative_to(ROOT)}:{f.lineno} {f.name}: {f.end_lineno - f.lineno + 1}"
                      for p in SOURCES for f in ast.walk(ast.parse(p.read_text()))
                      if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.end_lineno - f.lineno + 1 > 60]
    assert long_modules == [] and long_functions == []


def test_one_growth_loop_feeds_drafters():
    """Only ``grow.grow`` asks a drafter to expand a tree layer (the latency profiler times one call)."""
    callers = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("opttree_core/**/*.py")
                     if re.search(r"(?<![\w.])drafter\.expand\b", p.read_text()))  # not the stopwatch's self.drafter
    assert callers == ["opttree_core/grow.py", "opttree_core/profiling.py"]
    loops = [p for p in ROOT.glob("opttree_core/**/*.py") if "for depth in range(1, max_depth + 1)" in p.read_text()]
    assert [p.name for p in loops] == ["grow.py"]


def test_the_core_never_imports_the_tools_or_treeviz():
    core = [p for p in ROOT.glob("opttree_core/**/*.py")
            if "tools" not in p.relative_to(ROOT).parts and p.name != "__main__.py"]  # __main__: the CLI's entry
    offenders = []
    for path in core:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.startswith(("treeviz", "opttree_core.tools", "tools", "IPython", "plotly", "matplotlib"))
                   for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path`` (relative imports resolved within opttree_core)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or ""))
    return found


def test_treeviz_imports_nothing_from_the_tools_layer():
    """treeviz reaches the engine through its core (``Session``, the registries), never ``opttree_core.tools``."""
    offenders = [f"{p.relative_to(ROOT)}:{line} {name}" for p in ROOT.glob("treeviz/*.py")
                 for line, name in _imports(p) if name.startswith("opttree_core.tools")]
    assert offenders == []


def test_run_info_is_made_in_one_place():
    """Every recorded run's meta comes from ``Session.run``: RunInfo is constructed nowhere else."""
    places = sorted(f"{p.relative_to(ROOT)}" for folder in ("opttree_core", "treeviz", "benchmarks", "figures")
                    for p in ROOT.glob(f"{folder}/**/*.py") if "RunInfo(" in p.read_text())
    assert places == ["opttree_core/session.py"]


def test_records_and_metrics_import_without_torch():
    code = ("import sys; import opttree_core.records, opttree_core.metrics; "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
