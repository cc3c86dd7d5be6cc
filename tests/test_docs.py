"""The project's own algorithm reference (docs/algorithms.md) holds every section the code and docs cite."""

import re
from pathlib import Path

from conftest import REPO

REFERENCE = REPO / "docs" / "algorithms.md"
# where citations live: code, workflow, tests, hyperparameters, configs, the README and the docs (not docs/results)
CITING = ["encore", "workflow", "tests", "hparams", "configs"]
CITING_FILES = [REPO / "README.md", REPO / "Snakefile", *sorted((REPO / "docs").glob("*.md"))]
SUFFIXES = {".py", ".yaml", ".yml", ".md", ".smk", ".toml", ""}

# "algorithms.md" followed by one or more section numbers: "§2.1", "§4.4, §10.1", "§2.1, §13 #11"
CITATION = re.compile(r"algorithms\.md((?:[ ,;]*(?:and )?§\d+(?:\.\d+)?(?: #\d+)?)+)")
SECTION = re.compile(r"§(\d+)(?:\.(\d+))?(?: #(\d+))?")
TOP_HEADING = re.compile(r"^## (\d+)\. ", re.MULTILINE)
SUB_HEADING = re.compile(r"^### (\d+)\.(\d+) ", re.MULTILINE)


def citing_files() -> list[Path]:
    files = [path for path in CITING_FILES if path.is_file()]
    for folder in CITING:
        files += [
            path
            for path in sorted((REPO / folder).rglob("*"))
            if path.is_file() and path.suffix in SUFFIXES and "__pycache__" not in path.parts
        ]
    return files


def citations() -> list[tuple[str, str, str | None, str | None]]:
    """(file:line, section, subsection or None, quirk number or None) of every citation of the reference."""
    found = []
    for path in citing_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for match in CITATION.finditer(line):
                for section, subsection, quirk in SECTION.findall(match.group(1)):
                    where = f"{path.relative_to(REPO)}:{number}"
                    found.append((where, section, subsection or None, quirk or None))
    return found


def headings(text: str) -> tuple[set[str], set[tuple[str, str]]]:
    return set(TOP_HEADING.findall(text)), set(SUB_HEADING.findall(text))


def quirk_numbers(text: str) -> set[str]:
    """The numbers of the rows of the quirks table, section 13."""
    start = re.search(r"^## 13\. ", text, re.MULTILINE)
    if start is None:
        return set()
    end = TOP_HEADING.search(text, start.end())
    section = text[start.end() : end.start() if end else len(text)]
    return set(re.findall(r"^\| (\d+) \|", section, re.MULTILINE))


def missing_citations(text: str, found) -> list[str]:
    """Citations of ``found`` whose section, subsection or quirk number ``text`` does not have."""
    top, sub = headings(text)
    quirks = quirk_numbers(text)
    missing = []
    for where, section, subsection, quirk in found:
        cited = f"§{section}" + (f".{subsection}" if subsection else "") + (f" #{quirk}" if quirk else "")
        if section not in top:
            missing.append(f"{where}: {cited} (no heading '## {section}.')")
        elif subsection and (section, subsection) not in sub:
            missing.append(f"{where}: {cited} (no heading '### {section}.{subsection}')")
        elif quirk and (section != "13" or quirk not in quirks):
            missing.append(f"{where}: {cited} (no row {quirk} in the quirks table of section 13)")
    return missing


def test_every_algorithms_citation_points_at_a_section_that_exists():
    found = citations()
    assert len(found) >= 40, f"only {len(found)} citations found: has the citation pattern changed?"
    missing = missing_citations(REFERENCE.read_text(encoding="utf-8"), found)
    assert not missing, "citations of docs/algorithms.md without their section:\n" + "\n".join(missing)


def test_a_citation_of_a_missing_section_or_quirk_is_reported():
    text = "## 2. Keys\n\n### 2.1 Requests\n\n## 13. Quirks\n\n| # | what |\n|---|---|\n| 8 | templates |\n"
    line = "see algorithms" + ".md §2.1, §2.7, §13 #8, §13 #9 and §5"  # split: not a citation of this file
    found = [
        ("x.py:1", section, sub or None, quirk or None)
        for section, sub, quirk in SECTION.findall(CITATION.search(line).group(1))
    ]
    assert [entry[1:] for entry in found] == [("2", "1", None), ("2", "7", None), ("13", None, "8"),
                                             ("13", None, "9"), ("5", None, None)]  # fmt: skip
    cited = [entry.split(": ", 1)[1].split(" (")[0] for entry in missing_citations(text, found)]
    assert cited == ["§2.7", "§13 #9", "§5"]


# links and images in the README and docs/*.md: [text](target) and ![alt](target), outside code blocks and spans
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
LINKING_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def anchors(text: str) -> set[str]:
    """GitHub's anchors of the headings of a Markdown page: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        suffixed, n = slug, 0
        while suffixed in found:
            n += 1
            suffixed = f"{slug}-{n}"
        found.add(suffixed)
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links and image paths of ``page`` whose file, folder or heading anchor does not exist."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    text = re.sub(r"`[^`\n]*`", "", text)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-zA-Z][a-zA-Z+.-]*:", target):  # https:, mailto:: not checked here
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no {resolved.relative_to(REPO) if resolved.is_relative_to(REPO) else resolved})")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
            broken.append(f"{target} (no heading with anchor #{anchor})")
    return broken


def test_every_relative_link_in_the_readme_and_docs_resolves():
    checked = sum(len(LINK.findall(path.read_text(encoding="utf-8"))) for path in LINKING_FILES)
    assert checked >= 40, f"only {checked} links found: has the link pattern changed?"
    broken = [f"{path.relative_to(REPO)}: {link}" for path in LINKING_FILES for link in broken_links(path)]
    assert not broken, "links that do not resolve:\n" + "\n".join(broken)


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("# Title\n\n## The result: 3,000 edits (`config.yaml`)\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n[ok](other.md) [ok](other.md#the-result-3000-edits-configyaml) ![img](missing.png) [web](https://x.org)\n"
        "[bad](other.md#nowhere) `[code](gone.md)`\n```\n[block](gone.md)\n```\n[self](#page) [self](#title)\n"
    )
    assert [entry.split(" (")[0] for entry in broken_links(page)] == ["missing.png", "other.md#nowhere", "#title"]
