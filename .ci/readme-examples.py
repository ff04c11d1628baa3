#!/usr/bin/env python3
"""Each published crate's README example is compiled.

A crate whose src/lib.rs includes its README (`include_str!("../README.md")`, as a doctest)
compiles the README itself. Any other crate's README must show, in each of its ```rust
blocks, exactly the visible lines (the `# ` lines hidden) of one doctest of its src/lib.rs,
so that the README cannot drift from an example that `cargo test --doc` runs.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def fenced_rust_blocks(lines):
    """The ```rust blocks of a README (untagged and `ignore` blocks are not examples)."""
    blocks, block = [], None
    for line in lines:
        fence = re.match(r"\s*```(.*)$", line)
        if fence and block is None:
            info = fence.group(1).strip()
            block = [] if info.split(",")[0] == "rust" and "ignore" not in info else False
        elif fence:
            if block:
                blocks.append(block)
            block = None
        elif block is not False and block is not None:
            block.append(line)
    return blocks


def visible(block):
    return [l for l in block if not (l.strip() == "#" or l.lstrip().startswith("# "))]


def lib_doctests(lib):
    docs = [l[3:].removeprefix(" ") for l in lib.splitlines() if l.startswith("//!")]
    # `//!` blocks are Rust unless tagged otherwise (untagged counts as Rust in rustdoc).
    blocks, block = [], None
    for line in docs:
        fence = re.match(r"```(.*)$", line)
        if fence and block is None:
            info = fence.group(1).strip()
            rust = info == "" or info.split(",")[0] in ("rust", "no_run", "should_panic")
            block = [] if rust and "ignore" not in info and info != "text" else False
        elif fence:
            if block:
                blocks.append(visible(block))
            block = None
        elif block is not False and block is not None:
            block.append(line)
    return blocks


failures = 0
for manifest in [ROOT / "Cargo.toml", *sorted(ROOT.glob("crates/*/Cargo.toml"))]:
    crate = manifest.parent
    readme, lib = crate / "README.md", crate / "src" / "lib.rs"
    if not readme.exists() or not lib.exists():
        continue
    source = lib.read_text()
    if 'include_str!("../README.md")' in source:
        print(f"{crate.name}: README compiled as a doctest")
        continue
    doctests = lib_doctests(source)
    for block in fenced_rust_blocks(readme.read_text().splitlines()):
        if visible(block) not in doctests:
            failures += 1
            print(f"{readme}: a rust block is neither compiled nor a doctest of {lib}", file=sys.stderr)
    print(f"{crate.name}: README example mirrors a doctest of src/lib.rs")
sys.exit(1 if failures else 0)
