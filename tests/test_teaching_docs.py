"""The teaching material (issue 27): the glossary every link points into, the exercises of notebooks
01-05 with their folded solutions, the teacher's guide and where the README puts the notebooks.

Text only: no notebook is run and no model is loaded."""
import re
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parent.parent
GLOSSARY = ROOT / "docs" / "glossary.md"
WALKTHROUGHS = sorted((ROOT / "notebooks").glob("0[1-5]_*.py"))
LINKING = sorted({*ROOT.glob("*.md"), *ROOT.glob("*/*.md"), *(ROOT / "notebooks").glob("[0-9][0-9]_*.py")})
LINK = re.compile(r"\]\(([^)\s#]*glossary\.md)?(?:#([^)\s]*))?\)")
EXERCISE = re.compile(r"\*\*Exercise (\d+)\.\*\*")


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def glossary_anchors() -> set[str]:
    text = GLOSSARY.read_text()
    ids = set(re.findall(r'<a id="([^"]+)"></a>', text))
    return ids | {github_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def glossary_links(path: Path) -> list[tuple[str, str]]:
    """(target file, anchor) of every markdown link into the glossary from ``path`` (in the glossary
    itself, a bare ``(#anchor)`` link too)."""
    links = []
    for target, anchor in LINK.findall(path.read_text()):
        if target:
            links.append((target, anchor))
        elif path == GLOSSARY and anchor:
            links.append(("glossary.md", anchor))
    return links


def test_the_glossary_defines_each_core_term_once():
    text = GLOSSARY.read_text()
    ids = re.findall(r'<a id="([^"]+)"></a>', text)
    assert len(ids) == len(set(ids)), "an anchor is defined twice"
    for term in ("p-hat", "q", "p", "ea", "esub", "a", "mal", "delta", "n", "depth", "acceptance-vector"):
        assert term in ids, f"the glossary has no entry #{term}"


def test_every_glossary_link_resolves():
    anchors, checked = glossary_anchors(), 0
    for path in LINKING:
        for target, anchor in glossary_links(path):
            if target != "glossary.md" or path != GLOSSARY:
                assert (path.parent / target).resolve() == GLOSSARY, f"{path.name}: link to {target} misses docs/glossary.md"
            if anchor:
                assert anchor in anchors, f"{path.relative_to(ROOT)}: no anchor #{anchor} in docs/glossary.md"
            checked += 1
    assert checked >= 20  # the notebooks and both READMEs link it


@pytest.mark.parametrize("source", WALKTHROUGHS, ids=lambda p: p.stem)
def test_walkthrough_links_the_glossary(source):
    assert glossary_links(source), f"{source.name} never links docs/glossary.md"


@pytest.mark.parametrize("source", WALKTHROUGHS, ids=lambda p: p.stem)
def test_walkthrough_ends_with_exercises_each_with_a_folded_solution(source):
    cells = jupytext.read(source).cells
    last_code = max(i for i, c in enumerate(cells) if c.cell_type == "code")
    exercises = [i for i, c in enumerate(cells) if c.cell_type == "markdown" and EXERCISE.search(c.source)]
    assert len(exercises) >= 2, f"{source.name}: fewer than 2 exercises"
    assert [int(EXERCISE.search(cells[i].source).group(1)) for i in exercises] == list(range(1, len(exercises) + 1))
    for i in exercises:
        assert i > last_code, f"{source.name}: an exercise comes before the notebook's last code cell"
        solution = cells[i + 1] if i + 1 < len(cells) else None
        assert solution is not None and solution.cell_type == "markdown", f"{source.name}: exercise without a solution"
        assert "solution" in solution.metadata.get("tags", []), f"{source.name}: solution cell not tagged 'solution'"
        body = solution.source.strip()
        assert body.startswith("<details><summary>Solution</summary>") and body.endswith("</details>"), \
            f"{source.name}: a solution is not one folded <details> block"
        assert "<details open" not in body and not EXERCISE.search(body)


def test_the_readme_puts_the_notebooks_before_the_command_line():
    readme = (ROOT / "README.md").read_text()
    headings = re.findall(r"^## (.+)$", readme, re.MULTILINE)
    assert headings.index("Notebooks") == headings.index("What's inside") + 1
    assert headings.index("Notebooks") < headings.index("Command line")
    section = readme.split("## Notebooks", 1)[1].split("\n## ", 1)[0]
    assert "(notebooks/README.md)" in section and "(docs/glossary.md)" in section


def test_the_teachers_guide_covers_every_notebook():
    guide = (ROOT / "notebooks" / "README.md").read_text()
    for source in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        assert f"`{source.stem}`" in guide, f"the guide never names {source.stem}"
    for part in ("## Launch", "OPTTREE_FAST=1", "## Prerequisites", "## A 90-minute lecture", "(../docs/glossary.md)"):
        assert part in guide
