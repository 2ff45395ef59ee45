"""The README is a front page and the documentation's links work on a plain repository view.

Every Markdown link and image in ``README.md`` and ``docs/*.md`` is checked: a relative target
must exist in the repository, and an ``#anchor`` must name a heading of the target Markdown file,
with headings turned into anchors as GitHub does (lowercase, punctuation removed, spaces to
hyphens, ``-1``, ``-2``, ... for repeated headings). The README must stay a front page: at most
200 lines, with its sections in a fixed order.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"

# Targets that the README names before they exist in this checkout: the licence and citation
# files are added separately; once they are present they are checked like every other target.
NOT_YET_PRESENT = {"LICENSE", "CITATION.cff"}

# The front page's sections, in order (the `## ` headings of README.md).
README_SECTIONS = [
    "Set-up and run: two commands",
    "Results at a glance",
    "Read the paper with the code",
    "The notebooks",
    "Layout",
    "What is ours and what is the paper's",
    "Documentation",
    "Citation and licence",
]

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets.
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]*)(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
_HTML_ANCHOR = re.compile(r"<a\s+[^>]*(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, numbered from 1."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if match:
            if fence is None:
                fence = match.group(1)
            elif match.group(1) == fence:
                fence = None
            continue
        if fence is None:
            lines.append((number, line))
    return lines


def headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading outside code blocks."""
    found = []
    for _, line in prose_lines(text):
        match = re.match(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if match:
            found.append((len(match.group(1)), match.group(2)))
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its rendered text, lowercased, punctuation removed,
    each space a hyphen."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    seen: dict[str, int] = {}
    found = set()
    for _, heading in headings(text):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    found.update(_HTML_ANCHOR.findall(text))
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every inline link, image and reference definition outside code."""
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        line = _INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)
        for match in _INLINE_LINK.finditer(line):
            found.append((number, match.group(1).strip("<>")))
        match = _REFERENCE_DEFINITION.match(line)
        if match:
            found.append((number, match.group(1).strip("<>")))
    return found


def broken_links(path: Path) -> list[str]:
    problems = []
    for number, target in links(path):
        where = f"{path.relative_to(PROJECT_ROOT)}:{number}: ({target})"
        if not target:
            problems.append(f"{where} an empty link")
            continue
        if _SCHEME.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        try:
            relative = destination.relative_to(PROJECT_ROOT)
        except ValueError:
            problems.append(f"{where} leaves the repository")
            continue
        if not destination.exists():
            if relative.as_posix() not in NOT_YET_PRESENT:
                problems.append(f"{where} {relative.as_posix()} does not exist")
            continue
        if anchor and destination.suffix.lower() == ".md" and anchor not in anchors(destination):
            problems.append(f"{where} no heading of {relative.as_posix()} has the anchor #{anchor}")
    return problems


def test_github_slugs():
    assert github_slug("A fair test: protocol, LLM ladder and the paper's method alone") == \
        "a-fair-test-protocol-llm-ladder-and-the-papers-method-alone"
    assert github_slug("How `make env` uses it") == "how-make-env-uses-it"
    assert github_slug("Set-up and run: two commands") == "set-up-and-run-two-commands"
    assert github_slug("A second describer: Qwen2.5-Coder-0.5B-Instruct") == \
        "a-second-describer-qwen25-coder-05b-instruct"
    assert github_slug("[The lite backbone](docs/backbones.md) on a CPU") == "the-lite-backbone-on-a-cpu"


def test_the_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "PROJECT_ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# Title\n\n## A section, with `code`\n", encoding="utf-8")
    page = tmp_path / "docs" / "a.md"
    page.write_text("# A\n\n[ok](b.md#a-section-with-code) [gone](c.md) [no anchor](b.md#nothing)\n"
                    "![img](../figures/x.png) [web](https://example.org) [self](#a)\n"
                    "```\n[in code](missing.md)\n```\n`[in code](missing.md)`\n", encoding="utf-8")
    problems = broken_links(page)
    assert len(problems) == 3, problems
    assert "c.md does not exist" in problems[0]
    assert "#nothing" in problems[1]
    assert "figures/x.png does not exist" in problems[2]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(PROJECT_ROOT).as_posix())
def test_every_relative_link_and_anchor_resolves(path):
    problems = broken_links(path)
    assert not problems, "\n".join(problems)


def test_readme_is_a_front_page_of_at_most_200_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail to a page under docs/"


def test_readme_sections_come_in_order():
    text = README.read_text(encoding="utf-8")
    found = headings(text)
    assert found[0] == (1, "osgha-lite")
    assert [heading for level, heading in found if level == 2] == README_SECTIONS
    sections = re.split(r"^## ", text, flags=re.M)
    by_title = {section.splitlines()[0]: section for section in sections[1:]}
    commands = by_title["Set-up and run: two commands"]
    assert re.search(r"^make reproduce\b", commands, re.M) and re.search(r"^make test\b", commands, re.M)
    results = text[text.index("<!-- results:start -->"):text.index("<!-- results:end -->")]
    assert "## Results at a glance" in results
    assert re.findall(r"!\[[^\]]*\]\(([^)]+)\)", results) == ["figures/lite/05_direction_gains.png"]
    table_rows = [line for line in by_title["Read the paper with the code"].splitlines() if line.startswith("|")]
    assert "`osgha_lite/methods/hypergraph/adapter.py`" in table_rows[2], "the adapter comes first"
    licence = by_title["Citation and licence"]
    assert "(LICENSE)" in licence and "(CITATION.cff)" in licence and "2510.13131" in licence


def test_every_docs_page_has_a_title_and_a_summary_and_is_listed():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    readme = README.read_text(encoding="utf-8")
    assert "(docs/index.md)" in readme
    for page in sorted(DOCS.glob("*.md")):
        lines = [line for line in page.read_text(encoding="utf-8").splitlines() if line.strip()]
        assert lines[0].startswith("# "), f"{page.name}: the first line is not a `# Title`"
        assert not lines[1].startswith(("#", "|", "```", "-", "*")), f"{page.name}: no one-sentence summary"
        if page.name != "index.md":
            assert f"]({page.name})" in index, f"docs/index.md does not list {page.name}"


def test_every_docs_page_is_in_the_sites_table_of_contents():
    """The committed table of contents (book/_toc.yml) lists every page of docs/, so the site renders it."""
    toc = (PROJECT_ROOT / "book" / "_toc.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\s*- file: (docs/[\w-]+)$", toc, re.MULTILINE))
    missing = sorted(f"docs/{p.stem}" for p in DOCS.glob("*.md"))
    assert [p for p in missing if p not in listed] == []


CODE_PATH = re.compile(r"(?<![\w.])osgha_lite/[\w./]*\w")
CODE_NAME = re.compile(r"(?<![\w./])osgha_lite(?:\.[A-Za-z_]\w*)+")


def test_every_module_path_and_dotted_name_in_the_pages_exists():
    """Docs that match the code: each `osgha_lite/...` path names a file or folder of the repository, and each
    `osgha_lite.x.y` names a module, or an attribute of one, that imports."""
    import importlib

    problems = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for path in sorted(set(CODE_PATH.findall(text))):
            if not (PROJECT_ROOT / path).exists():
                problems.append(f"{page.name}: {path} does not exist")
        for dotted in sorted(set(CODE_NAME.findall(text))):
            parts = dotted.split(".")
            for cut in range(len(parts), 0, -1):
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                try:
                    for name in parts[cut:]:
                        obj = getattr(obj, name)
                except AttributeError:
                    problems.append(f"{page.name}: {dotted} names nothing ({'.'.join(parts[:cut])} has no {name})")
                break
            else:
                problems.append(f"{page.name}: {dotted} is not a module")
    assert problems == []
