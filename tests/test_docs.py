"""The documentation holds together: README.md and docs/ link only to files and headings that
exist, every "contract §N" the code, the tests and the docs cite names a section of
docs/compatibility.md, the tests docs/reliability.md names exist, and no internal marker or
stale figure is left in what users read."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
PAGES = [REPO_ROOT / "README.md", REPO_ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CITE = re.compile(r"contract (§[0-9.]*[0-9](?:, §[0-9.]*[0-9])*)")


def _prose(text: str) -> str:
    """The page without its fenced blocks (code is not linked)."""
    return _FENCE.sub("", text)


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {
        _anchor(m.group(1))
        for m in re.finditer(r"^#{1,6} (.+)$", _prose(path.read_text(encoding="utf-8")), re.M)
    }


def _links(path: Path) -> list[str]:
    return _LINK.findall(_prose(path.read_text(encoding="utf-8")))


def test_every_link_resolves() -> None:
    checked, broken = 0, []
    for page in PAGES:
        for target in _links(page):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (page.parent / file_part).resolve() if file_part else page
            checked += 1
            where = f"{page.relative_to(REPO_ROOT)}: ({target})"
            if not dest.exists():
                broken.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{where}: no heading #{anchor} in {dest.name}")
    assert checked > 60
    assert broken == []


def test_every_contract_citation_names_a_section() -> None:
    """"contract §3.11" in a docstring or a page is docs/compatibility.md's "### 3.11 ..."."""
    sections = {
        m.group(1)
        for m in re.finditer(
            r"^#{2,4} ([0-9]+(?:\.[0-9]+)*)\.? ",
            (DOCS / "compatibility.md").read_text(encoding="utf-8"),
            re.M,
        )
    }
    cited: dict[str, list[str]] = {}
    files = [*REPO_ROOT.glob("gitsync/**/*.py"), *REPO_ROOT.glob("tests/**/*.py"), *PAGES]
    for path in files:
        for m in _CITE.finditer(path.read_text(encoding="utf-8")):
            for ref in re.findall(r"§([0-9.]*[0-9])", m.group(1)):
                cited.setdefault(ref, []).append(str(path.relative_to(REPO_ROOT)))
    assert len(cited) >= 8, cited
    unknown = {ref: where for ref, where in cited.items() if ref not in sections}
    assert unknown == {}, f"cited sections missing from docs/compatibility.md: {unknown}"


def test_reliability_names_tests_that_exist() -> None:
    text = (DOCS / "reliability.md").read_text(encoding="utf-8")
    sources = "\n".join(p.read_text(encoding="utf-8") for p in REPO_ROOT.glob("tests/**/*.py"))
    files = set(re.findall(r"`(tests/[\w/]+\.py)", text))
    names = set(re.findall(r"`(?:tests/[\w/]+\.py::)?(test_\w+)`", text))
    assert len(files) > 15 and len(names) > 15
    assert sorted(f for f in files if not (REPO_ROOT / f).is_file()) == []
    assert sorted(n for n in names if f"def {n}(" not in sources) == []


def test_what_users_read_has_no_internal_markers_or_stale_figures() -> None:
    from gitsync.checkout.worktree import MAX_TREE_DEPTH

    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        where = str(page.relative_to(REPO_ROOT))
        assert not re.search(r"<!-- issue\d+:(start|end) -->", text), where
        assert not re.search(r"\bFAIL\b", text), f"{where}: a FAIL row"
        assert "<org>" not in text, f"{where}: a placeholder that breaks when pasted"
        for m in re.finditer(r"MAX_TREE_DEPTH`? \(([0-9,]+)", text):
            assert int(m.group(1).replace(",", "")) == MAX_TREE_DEPTH, where
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert 7_000 <= len(readme.encode()) <= 10_240, "the README stays short"
    assert "## Architecture" in readme, "the developers' guide requires the map of the code"
