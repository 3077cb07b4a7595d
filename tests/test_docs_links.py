"""Every relative link in the README, docs/ and the examples' READMEs resolves to a file or folder inside the
repository, and every #anchor to a heading of the page it names (GitHub's heading ids)."""

from __future__ import annotations

import pathlib
import re
import unicodedata

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*/README.md")])
LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?\s*\)")


def prose(text: str) -> str:
    """The page without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)
    text = re.sub(r"^(?: {4}|\t).*$", "", text, flags=re.M)  # indented code blocks
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", text)


def slug(heading: str) -> str:
    """GitHub's id for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = text.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(page: pathlib.Path) -> set[str]:
    seen: dict[str, int] = {}
    ids = set()
    for line in re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", page.read_text(), flags=re.S | re.M).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f"{base}-{count}")
    return ids


def links(page: pathlib.Path) -> list[str]:
    text = prose(page.read_text())
    return LINK.findall(text) + IMAGE.findall(text)


def test_pages_exist():
    assert ROOT / "README.md" in PAGES and ROOT / "docs" / "architecture.md" in PAGES


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(page):
    problems = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if ROOT not in (resolved, *resolved.parents):
            problems.append(f"{target}: outside the repository ({resolved})")
            continue
        if not resolved.exists():
            problems.append(f"{target}: {resolved.relative_to(ROOT)} does not exist")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading with id #{anchor} in {resolved.relative_to(ROOT)}")
    assert not problems, f"{page.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_the_checker_sees_bad_links(tmp_path):
    """The checks above can fail: a page with a link outside, a missing file and a missing anchor."""
    page = ROOT / "docs" / "op.md"
    assert "limits" in anchors(page) and "fallback" in anchors(page)
    assert slug("`ncnn_onnx::NormalizedConv`, version 1") == "ncnn_onnxnormalizedconv-version-1"
    text = "See [a](../shared/DESIGN.md), [b](docs/nothing.md), [c](docs/op.md#nowhere), `[d](x.md)` and [e](https://x.org)."
    assert [t for t in LINK.findall(prose(text))] == ["../shared/DESIGN.md", "docs/nothing.md", "docs/op.md#nowhere",
                                                     "https://x.org"]
