"""Docstrings, comments and messages cite documents that a clone contains.

The code cites ``docs/paper.md``, ``docs/architecture.md``, ``docs/glossary.md`` and
``CONTRIBUTING.md`` (a section as ``docs/paper.md §Encoder`` or ``docs/paper.md#encoder``),
never a document outside the repository (a design note, a reimplementation spec, an
issue number). A section anchor must be the GitHub slug of a heading of that file
(case-insensitive: ``§Direction-of-imports`` cites ``## Direction of imports``), so a cited
section cannot be renamed or removed without the citation being fixed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CODE_DIRS = ("simulation", "devices", "calibration", "hil", "experiments", "scripts")
MARKDOWN = ("README.md", "CONTRIBUTING.md", "docs")

#: Citations of documents a clone does not contain. ``shared/data`` is the real image sets'
#: folder that users point ``HIL_DATA_DIR`` at: it is a path, not a citation. A numbered
#: section ("§9.3") is another document's: the sections of docs/*.md are cited by name.
OUTSIDE = re.compile(
    r"DESIGN\.md|paper-spec|anchors\.md|shared/(?!data\b)|\b[Ii]ssues? #?\d+|§\s?\d")
#: ``docs/x.md §Anchor``, ``docs/x.md#anchor``, ``CONTRIBUTING.md §Anchor`` (also after a
#: space: "docs/paper.md, §Claims" is not a citation form we accept, so it is not matched).
CITATION = re.compile(
    r"(?P<doc>(?:docs/[\w-]+|CONTRIBUTING|README)\.md)(?:\s*§|#)(?P<anchor>[\w.-]+)")
#: A bare ``docs/x.md`` (the file must exist).
DOC_NAME = re.compile(r"docs/[\w-]+\.md")
MD_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def _code_files() -> list[Path]:
    return sorted(f for d in CODE_DIRS for f in (ROOT / d).rglob("*.py")
                  if "__pycache__" not in f.parts)


def _markdown_files() -> list[Path]:
    out = []
    for name in MARKDOWN:
        p = ROOT / name
        out += sorted(p.rglob("*.md")) if p.is_dir() else [p] if p.is_file() else []
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces -> hyphens."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    """The slugs of the headings of a markdown file (fenced code blocks skipped)."""
    out, fenced = set(), False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            out.add(slug(m.group(1)))
    return out


def outside_citations(text: str) -> list[str]:
    """Lines of ``text`` that cite a document a clone does not contain."""
    return [f"{i}: {line.strip()}" for i, line in enumerate(text.splitlines(), 1)
            if OUTSIDE.search(line)]


def broken_citations(text: str, root: Path = ROOT) -> list[str]:
    """Citations in ``text`` of a docs file that does not exist, or of a section it lacks."""
    bad, cache = [], {}
    for i, line in enumerate(text.splitlines(), 1):
        for name in DOC_NAME.findall(line):
            if not (root / name).is_file():
                bad.append(f"{i}: {name} does not exist")
        for m in CITATION.finditer(line):
            doc = root / m.group("doc")
            if not doc.is_file():
                bad.append(f"{i}: {m.group('doc')} does not exist")
                continue
            if doc not in cache:
                cache[doc] = anchors(doc)
            anchor = m.group("anchor").rstrip(".").lower()
            if anchor not in cache[doc]:
                bad.append(f"{i}: {m.group('doc')} has no section '{m.group('anchor')}' "
                           f"(its sections: {', '.join(sorted(cache[doc]))})")
    return bad


# ------------------------------------------------------------------- the checker itself
def test_checker_catches_outside_citations():
    for text in ("see DESIGN.md §6", "(paper-spec §2.2)", "reference/anchors.md",
                 "issue 10: 0.39 -> 0.14", "Issue 9's control", "../shared/DESIGN.md",
                 "issue #12", "bug, §9.3)"):
        assert outside_citations(text), text
    for text in ("HIL_DATA_DIR=../shared/data", "the shared data folder", "an issue with it",
                 "docs/paper.md §Claims"):
        assert not outside_citations(text), text


def test_checker_catches_missing_sections(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n\n## Direction of imports\n\n```\n## Not\n```\n")
    assert not broken_citations("docs/a.md §Direction-of-imports and docs/a.md#a.", tmp_path)
    assert broken_citations("docs/a.md §Imports", tmp_path)
    assert broken_citations("docs/a.md §Not", tmp_path)  # a heading inside a code block
    assert broken_citations("docs/b.md", tmp_path)
    assert broken_citations("docs/b.md §A", tmp_path)


# ----------------------------------------------------------------------- the tree
@pytest.mark.parametrize("path", _code_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_code_cites_only_documents_in_the_repository(path):
    text = path.read_text(encoding="utf-8")
    bad = outside_citations(text) + broken_citations(text)
    assert not bad, (f"{path.relative_to(ROOT)} cites documents a clone does not contain "
                     "(cite docs/paper.md, docs/architecture.md, docs/glossary.md or "
                     "CONTRIBUTING.md, or state the fact): " + "; ".join(bad))


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_stay_in_the_repository(path):
    text = path.read_text(encoding="utf-8")
    bad = outside_citations(text) + broken_citations(text)
    for i, line in enumerate(text.splitlines(), 1):
        for m in MD_LINK.finditer(line):
            target = m.group("target")
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL, or an anchor of this file
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve()
            if ROOT not in dest.parents and dest != ROOT:
                bad.append(f"{i}: {target} is outside the repository")
            elif not dest.exists():
                bad.append(f"{i}: {target} does not exist")
            elif anchor and dest.suffix == ".md" and anchor.lower() not in anchors(dest):
                bad.append(f"{i}: {target}: no such section")
    assert not bad, f"{path.relative_to(ROOT)}: " + "; ".join(bad)
