"""constraints.txt records the versions CI tested, for every dependency a user may install."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from devtools.agg import REPO


def pins() -> dict[str, Version]:
    out: dict[str, Version] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not a pin: {line!r}"
            key = canonicalize_name(name)
            assert key not in out, f"{name} pinned twice"
            out[key] = Version(version)
    return out


def test_every_dependency_is_pinned_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    wanted += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    pinned = pins()
    for req in wanted:
        version = pinned.get(canonicalize_name(req.name))
        assert version is not None, f"{req.name} is not in constraints.txt"
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} is outside {req}"


def test_ci_and_the_readme_install_with_the_constraints() -> None:
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    readme = (REPO / "README.md").read_text()
    assert ci[-1] in readme  # the README's test command, exactly
    # every pip command (not prose that mentions `pip install`)
    installs = re.findall(r"pip install [^`|\n]*", "\n".join(ci) + "\n" + readme)
    installs = [i for i in installs if i.split()[2].startswith(("-", ".", "'"))]
    assert installs and all("-c constraints.txt" in line for line in installs), installs
