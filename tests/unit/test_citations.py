"""Every test a comment or docstring names (``tests/<path>.py::test_name``) exists.

Race windows and crash windows in the code name the test that covers them; this keeps those
pointers true when tests move or are renamed. Test files named without a test must exist too.
"""

from __future__ import annotations

import re
from pathlib import Path

from devtools.agg import REPO

CITATION = re.compile(r"(?<![\w-])tests/([\w/]+\.py)(?:::(\w+))?")  # not snapshot-tests/…
SOURCES = ("aggregator", "workers", "cli", "devtools", "scripts", "docs", "README.md")


def _files() -> list[Path]:
    out: list[Path] = []
    for src in SOURCES:
        p = REPO / src
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(x for x in p.rglob("*") if x.suffix in (".py", ".md"))
    return out


def test_every_cited_test_exists() -> None:
    missing = []
    cited = 0
    for path in _files():
        # a citation may wrap after its "::" onto the next comment line
        text = re.sub(r"::\s*\n\s*(?:#|--)?\s*", "::", path.read_text())
        for m in CITATION.finditer(text):
            cited += 1
            target = REPO / "tests" / m.group(1)
            if not target.is_file():
                missing.append(f"{path.relative_to(REPO)}: tests/{m.group(1)}")
            elif m.group(2) and not re.search(rf"^\s*def {m.group(2)}\(", target.read_text(), re.M):
                missing.append(f"{path.relative_to(REPO)}: tests/{m.group(1)}::{m.group(2)}")
    assert cited > 20  # the scan found the citations
    assert missing == []


OTHER_PROJECTS = {"docs/jsonl-transcript-spec.md", "docs/GLOSSARY.md"}
"""Paths docs/transcript-format.md cites in other projects (pruett/fleet), not in this one."""
REPO_PATH = re.compile(r"(?<![\w./-])((?:aggregator|workers|cli|scripts|devtools|docs|tests)/[\w./-]*[\w/])")
PACKAGES = ("aggregator", "aggregator/live", "aggregator/live/web", "workers", "devtools")


def test_every_path_the_readme_and_docs_name_exists() -> None:
    docs = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    named = [(doc, m.group(1)) for doc in docs for m in REPO_PATH.finditer(doc.read_text())]
    assert len(named) > 50  # the scan found the paths
    missing = [
        f"{doc.relative_to(REPO)}: {path}"
        for doc, path in named
        if path not in OTHER_PROJECTS and not (REPO / path).exists()
    ]
    assert missing == []


def test_every_package_docstring_lists_its_modules() -> None:
    missing = []
    for pkg in PACKAGES:
        listed = (REPO / pkg / "__init__.py").read_text()
        for module in sorted((REPO / pkg).glob("*.py")):
            dotted = f"{pkg.replace('/', '.')}.{module.stem}"
            if module.stem != "__init__" and not re.search(rf"\b{re.escape(dotted)}\b", listed):
                missing.append(dotted)
    assert missing == []
