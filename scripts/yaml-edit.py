#!/usr/bin/env python3
"""Read or set keys of a block-style YAML file in place, keeping its comments and layout.

Usage:
  scripts/yaml-edit.py FILE get KEY.PATH                 print a scalar (e.g. appservice.bot.localpart)
  scripts/yaml-edit.py FILE set KEY.PATH=JSON [...]      set keys to values given as JSON

A set value replaces the key's whole value (a nested block too), written as JSON, which YAML reads
as a flow value: `bridge.networks={"local": {"servers": [{"host": "127.0.0.1"}]}}`. A plain word
that is not JSON is taken as a string. Missing keys and sections are added. Only for the simple
block mappings of our config files (no anchors, multi-line strings or keys with dots).
Standard library only: any python3 runs it.
"""

import json
import re
import sys

KEY = re.compile(r"^(\s*)([A-Za-z0-9_.-]+):(?:\s+(.*))?$")


def indent_of(line):
    return len(line) - len(line.lstrip(" "))


def is_content(line):
    stripped = line.strip()
    return stripped != "" and not stripped.startswith("#")


def block_end(lines, start, indent):
    """The index after the last line of the block under the key at `start` (deeper-indented lines)."""
    end = start + 1
    for i in range(start + 1, len(lines)):
        if is_content(lines[i]):
            if indent_of(lines[i]) <= indent:
                break
            end = i + 1
    return end


def find(lines, path, lo, hi, indent):
    """(index, indent) of the key `path[0]` at exactly `indent` within lines[lo:hi], or None."""
    for i in range(lo, hi):
        m = KEY.match(lines[i])
        if m and len(m.group(1)) == indent and m.group(2) == path[0]:
            return i
    return None


def child_indent(lines, i, indent):
    for j in range(i + 1, block_end(lines, i, indent)):
        if is_content(lines[j]):
            return indent_of(lines[j])
    return indent + 2


def locate(lines, path):
    """The line index of the key at `path`, or None."""
    lo, hi, indent = 0, len(lines), 0
    for depth, name in enumerate(path):
        i = find(lines, [name], lo, hi, indent)
        if i is None:
            return None
        if depth == len(path) - 1:
            return i
        lo, hi, indent = i + 1, block_end(lines, i, indent), child_indent(lines, i, indent)
    return None


def scalar(text):
    text = text.strip()
    if text.startswith(('"', "'")):
        quote = text[0]
        end = text.find(quote, 1)
        return text[1:end] if end > 0 else text[1:]
    return re.sub(r"\s+#.*$", "", text)


def get(lines, dotted):
    i = locate(lines, dotted.split("."))
    if i is None:
        sys.exit(f"yaml-edit: no key {dotted}")
    value = KEY.match(lines[i]).group(3)
    if not value or value.startswith("#"):
        sys.exit(f"yaml-edit: {dotted} is not a scalar")
    print(scalar(value))


def set_key(lines, dotted, value):
    path = dotted.split(".")
    rendered = json.dumps(value, ensure_ascii=False)
    lo, hi, indent = 0, len(lines), 0
    for depth, name in enumerate(path):
        last = depth == len(path) - 1
        i = find(lines, [name], lo, hi, indent)
        if i is None:
            # Add the key (and any missing sections below it) at the end of the parent block.
            insert_at = hi
            while insert_at > lo and not is_content(lines[insert_at - 1]):
                insert_at -= 1
            new = []
            for k, rest in enumerate(path[depth:]):
                pad = " " * (indent + 2 * k)
                new.append(f"{pad}{rest}: {rendered}" if k == len(path) - depth - 1 else f"{pad}{rest}:")
            lines[insert_at:insert_at] = new
            return
        if last:
            m = KEY.match(lines[i])
            end = block_end(lines, i, indent)
            lines[i:end] = [f"{m.group(1)}{name}: {rendered}"]
            return
        lo, hi, indent = i + 1, block_end(lines, i, indent), child_indent(lines, i, indent)


def main(argv):
    if len(argv) < 4 or argv[2] not in ("get", "set"):
        sys.exit(__doc__)
    path, command, args = argv[1], argv[2], argv[3:]
    with open(path) as f:
        lines = f.read().splitlines()
    if command == "get":
        for dotted in args:
            get(lines, dotted)
        return
    for assignment in args:
        dotted, sep, raw = assignment.partition("=")
        if not sep:
            sys.exit(f"yaml-edit: expected KEY=JSON, got {assignment!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        set_key(lines, dotted, value)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv)
