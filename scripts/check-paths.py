#!/usr/bin/env python3
"""Fails when a doc or a comment names a repository file that does not exist.

Usage: scripts/check-paths.py [ROOT]   (default: the repository this script is in)
       scripts/check-paths.py --self-test   (checks these rules on a tree of its own)

Where paths are looked for:
  - every *.md file, whole;
  - the comments (`//`, `///`, `//!`) of every *.rs file.
(The files git tracks under ROOT, or every file under it outside .git/ and target/ when ROOT is
not a git work tree.)

What counts as a path (a token starts after a space, a quote, a backtick, `(`, `[` or at the
start of a line; it ends before a space, a quote, a backtick, `)`, `]`, `,`, `;` or `:`, and a
trailing `.` is dropped):
  1. rooted: a token starting with one of ROOT's top-level directories followed by `/`, and
     naming a file (a `.` in its last part) or a directory (a trailing `/`): `src/zone/lookup.rs`,
     `tests/answers/`, `deploy/all-in-one/`, not `deploy/fleet` (a kubectl `deploy/NAME` looks
     the same); ROOT/token must exist;
  2. source-relative: a token ending in `.rs` with a `/` in it that is not rooted
     (`zone/builder.rs`, `kube/source.rs::run`, anything after `::` dropped): it must exist under
     src/, next to the file naming it, or under the top-level directory holding that file;
  3. a Markdown link's target in a *.md file (`[text](kube-store.md#anchor)`), not a URL or an
     anchor alone: it must exist relative to that file (the anchor dropped).
A token holding a pattern (`*`, `<`, `{`, `…`, `$`, `...`, or a part in capitals, `TARGET`,
`NAME`) stands for many names: only the directory before the pattern must exist. Braces of one level with commas are expanded instead
(`c{1,2}/` → `c1/`, `c2/`).

Prints `FILE:LINE: PATH does not exist` for each missing one; exit status 1 if any.
"""

import os
import re
import subprocess
import sys

TOKEN_START = r"(?:(?<=[\s\"'`(\[])|^)"
TOKEN = re.compile(TOKEN_START + r"([A-Za-z0-9_.](?:[^\s\"'`()\[\],;{]|\{[^{}\s]*\})*)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
COMMENT = re.compile(r"^\s*//[/!]?(.*)$")
PATTERN = re.compile(r"[*<{…$]|\.\.\.|(?<=/)[A-Z][A-Z0-9_]*(?=/|$)")
BRACES = re.compile(r"\{([^{}]*,[^{}]*)\}")


def files(root):
    try:
        out = subprocess.run(
            ["git", "-C", root, "ls-files", "-z"],
            check=True,
            capture_output=True,
        ).stdout.decode()
        if out:
            return [f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        pass
    found = []
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if x not in (".git", "target")]
        for n in names:
            found.append(os.path.relpath(os.path.join(d, n), root))
    return found


def texts(root, path):
    """(line number, text to search) of one file."""
    full = os.path.join(root, path)
    try:
        with open(full, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return
    for n, line in enumerate(lines, 1):
        if path.endswith(".md"):
            yield n, line
        else:
            m = COMMENT.match(line)
            if m:
                yield n, m.group(1)


def expand(token):
    m = BRACES.search(token)
    if not m:
        return [token]
    out = []
    for alt in m.group(1).split(","):
        out.extend(expand(token[: m.start()] + alt + token[m.end():]))
    return out


def concrete(token):
    """The part of a path that must exist: all of it, or the directory before a pattern."""
    m = PATTERN.search(token)
    if not m:
        return token
    return token[: token.rfind("/", 0, m.start()) + 1]


def exists(root, path):
    return bool(path) and os.path.exists(os.path.join(root, path))


def candidates(tops, path, token):
    """(the path, the places it may be) for a token, or None when it is no path by the rules."""
    token = token.split("::")[0].split("#")[0].rstrip(".:")
    if not token or "://" in token:
        return None
    first = token.split("/")[0]
    last = token.rstrip("/").split("/")[-1]
    if "/" in token and first in tops and (token.endswith("/") or "." in last):
        return token, [token]
    if "/" in token and token.endswith(".rs") and not token.startswith(("/", "~", "../")):
        here = os.path.dirname(path)
        top = path.split("/")[0] if "/" in path else ""
        return token, [os.path.join(d, token) for d in ("src", here, top)]
    return None


def check(root):
    tops = {
        e
        for e in os.listdir(root)
        if os.path.isdir(os.path.join(root, e)) and e not in (".git", "target")
    }
    missing = []
    for path in sorted(files(root)):
        if not path.endswith((".md", ".rs")):
            continue
        for n, text in texts(root, path):
            named = []
            for m in TOKEN.finditer(text):
                for token in expand(m.group(1)):
                    found = candidates(tops, path, token)
                    if found is not None:
                        named.append(found)
            if path.endswith(".md"):
                for m in LINK.finditer(text):
                    target = m.group(1).split("#")[0]
                    if target and "://" not in target and not target.startswith("mailto:"):
                        rel = os.path.normpath(os.path.join(os.path.dirname(path), target))
                        named.append((target, [rel]))
            seen = set()
            for token, places in named:
                if token in seen:
                    continue
                seen.add(token)
                if not any(exists(root, concrete(p)) for p in places):
                    missing.append(f"{path}:{n}: {token} does not exist")
    return missing


def self_test():
    """The rules on a small tree: what exists passes, each kind of missing path is reported."""
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        for d in ["src/zone", "docs", "tests/data/c1", "tests/data/c2"]:
            os.makedirs(os.path.join(root, d))
        for f in ["src/zone/lookup.rs", "docs/a.md"]:
            open(os.path.join(root, f), "w").close()
        with open(os.path.join(root, "README.md"), "w") as f:
            f.write(
                "`src/zone/lookup.rs`, `src/zone/gone.rs`, [a](docs/a.md#x), [b](docs/b.md).\n"
                "zone/lookup.rs::Snapshot, zone/missing.rs, tests/data/c{1,2}/, tests/data/c{1,3}/\n"
                "src/*/x.rs, src/nope/*.rs, src/NAME/x.rs, deploy/NAME, https://x.io/src/a.rs\n"
            )
        with open(os.path.join(root, "src/zone/x.rs"), "w") as f:
            f.write('// zone/lookup.rs, tests/data/c1/, tests/nothere.rs\nlet s = "src/no.rs";\n')
        got = check(root)
    want = [
        "README.md:1: src/zone/gone.rs does not exist",
        "README.md:1: docs/b.md does not exist",
        "README.md:2: zone/missing.rs does not exist",
        "README.md:2: tests/data/c3/ does not exist",
        "README.md:3: src/nope/*.rs does not exist",
        "src/zone/x.rs:1: tests/nothere.rs does not exist",
    ]
    if got != want:
        print("check-paths self-test failed:\n  got  %s\n  want %s" % (got, want), file=sys.stderr)
        sys.exit(1)


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    root = os.path.abspath(root)
    missing = check(root)
    for m in missing:
        print(m)
    if missing:
        print(f"{len(missing)} path(s) named in docs or comments do not exist", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
