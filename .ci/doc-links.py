#!/usr/bin/env python3
"""Docs stand alone: every relative Markdown link resolves inside the repository, and no
comment or document cites the protocol notes by a name outside docs/ (`esxi-wire.md`,
`design.md`, "spec section 2", ...), as the notes once lived outside the repository."""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTES = ("protocol.md", "esxi-wire.md", "uri-backing.md", "design.md", "performance.md")
files = subprocess.run(
    ["git", "ls-files", "*.md", "*.rs", "*.toml", ".ci/*"],
    cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
).stdout.split()

problems = []
for name in files:
    path = ROOT / name
    if not path.is_file():
        continue
    text = path.read_text(errors="replace")
    if name.endswith(".md"):
        for link in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:|#", link):
                continue
            if not (path.parent / link.split("#")[0]).resolve().exists():
                problems.append(f"{name}: link to {link}, which does not exist")
    if name == ".ci/doc-links.py":
        continue
    for number, line in enumerate(text.splitlines(), 1):
        if re.search(r"\bspec(ification)? section\b|\bshared/(spec|design)", line, re.I):
            problems.append(f"{name}:{number}: cites a document outside the repository")
        for note in NOTES:
            for match in re.finditer(re.escape(note), line):
                before = line[: match.start()]
                in_docs = name.startswith("docs/") and not before.endswith("/")
                if not (before.endswith("docs/") or in_docs):
                    problems.append(f"{name}:{number}: `{note}` without its docs/ path")
for problem in problems:
    print(problem, file=sys.stderr)
print(f"{len(files)} files checked, {len(problems)} problems")
sys.exit(1 if problems else 0)
