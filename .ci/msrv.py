#!/usr/bin/env python3
"""The workspace's rust-version is honest: no package in Cargo.lock declares a newer one.

Reads `cargo metadata` (every package of the lock's resolve, for every platform, dev- and
build-dependencies included) and fails, naming them, if any dependency needs a newer Rust
than the workspace's `rust-version`, or if a workspace member declares none.
"""
import json
import subprocess
import sys


def version(text):
    """`1.88` and `1.88.0` compare equal."""
    parts = [int(part) for part in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


def main():
    metadata = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--locked"],
            check=True,
            stdout=subprocess.PIPE,
        ).stdout
    )
    members = set(metadata["workspace_members"])
    ours = {p["rust_version"] for p in metadata["packages"] if p["id"] in members}
    if None in ours or len(ours) != 1:
        sys.exit(f"workspace members must share one rust-version, found {sorted(map(str, ours))}")
    msrv = ours.pop()
    newer = sorted(
        (version(p["rust_version"]), p["name"], p["version"], p["rust_version"])
        for p in metadata["packages"]
        if p["id"] not in members
        and p["rust_version"]
        and version(p["rust_version"]) > version(msrv)
    )
    if newer:
        for _, name, ver, needs in newer:
            print(f"{name} {ver} needs Rust {needs}", file=sys.stderr)
        sys.exit(f"rust-version {msrv} is not honest: raise it, or pin the dependencies above")
    highest = max(
        (version(p["rust_version"]), p["name"], p["rust_version"])
        for p in metadata["packages"]
        if p["id"] not in members and p["rust_version"]
    )
    print(
        f"rust-version {msrv}: {len(metadata['packages']) - len(members)} locked packages, "
        f"the most demanding {highest[1]} ({highest[2]})"
    )


if __name__ == "__main__":
    main()
