"""The README is a front door and every link in the documentation resolves.

Parses README.md and docs/*.md for markdown links and images `[text](target)` (outside code), skips
web and mail links, and checks that each relative target exists (relative to the file that holds the
link) and that each `#anchor` names a heading of its target, slugged as GitHub slugs headings.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_LINES = 250
DOCS = sorted([README, *(ROOT / "docs").glob("*.md")])

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
INLINE_CODE = re.compile(r"(`+).*?\1")
# [text](target "title") and ![alt](target); text may hold one level of brackets (an image in a link)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = ("http://", "https://", "mailto:")


def prose_lines(path: Path) -> list[str]:
    """The file's lines outside fenced code blocks (a `# comment` in a shell block is no heading)."""
    lines, fence = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * 3
        elif fence is not None and line.lstrip().startswith(fence):
            fence = None
        elif fence is None:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text (links and emphasis reduced to their words), lowercased,
    punctuation dropped except `-` and `_`, each space a `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text)                          # inline HTML tags
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)                          # \w keeps letters, digits and _
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor, duplicates numbered as GitHub numbers them (`x`, `x-1`, ...)."""
    seen: dict[str, int] = {}
    out = set()
    for line in prose_lines(path):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    """Every link and image target of the file's prose (inline code removed first)."""
    return [m.group(1) for line in prose_lines(path) for m in LINK.finditer(INLINE_CODE.sub("", line))]


def test_slug_follows_github():
    assert slug("Results of a real `make run` (2 cores, no GPU)") == "results-of-a-real-make-run-2-cores-no-gpu"
    assert slug("2. Create the Secrets (never committed)") == "2-create-the-secrets-never-committed"
    assert slug("Held-out tasks (`src/videossl/data/synthetic/families.py`, `src/videossl/eval/tasks.py`)") == \
        "held-out-tasks-srcvideossldatasyntheticfamiliespy-srcvideosslevaltaskspy"
    assert slug("Surprise (`eval/surprise.py`, `pretrain.masking: future`)") == \
        "surprise-evalsurprisepy-pretrainmasking-future"


def test_link_parser_skips_code(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("# Title\n\nSee [a](a.md#b) and ![img](p.png \"t\"), not `[c](c.md)`.\n\n"
                   "```bash\n# [d](d.md) is a comment\n```\n")
    assert links(doc) == ["a.md#b", "p.png"]
    assert anchors(doc) == {"title"}


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_link_resolves(doc: Path):
    broken = []
    for target in links(doc):
        if target.startswith(EXTERNAL) or not target:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / unquote(file_part)).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest} does not exist")
        elif anchor and dest.suffix == ".md" and unquote(anchor).lower() not in anchors(dest):
            broken.append(f"{target}: no heading of {dest.name} has the anchor #{anchor}")
    assert not broken, f"{doc.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_docs_are_found():
    names = {d.name for d in DOCS}
    assert {"README.md", "measurements.md"} <= names


def test_readme_is_a_front_door():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): "
                                            "move detail into docs/ and link it")


def test_readme_links_every_doc():
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README) if not t.startswith(EXTERNAL)}
    missing = [d.name for d in DOCS if d != README and d.resolve() not in linked]
    assert not missing, f"README.md links no page of: {missing}"
