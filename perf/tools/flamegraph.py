#!/usr/bin/env python3
"""Fold `perf script` output into stacks and draw them as a flame graph (SVG).

usage: perf script -i perf.data | flamegraph.py OUT.svg [--folded OUT.folded] [--title T]

Debian 12 does not package Brendan Gregg's FlameGraph scripts, so this does the two steps
(stackcollapse-perf and flamegraph) in one small program: every sample's call chain,
root first, becomes one line "a;b;c COUNT" of the folded file, and every frame one box
whose width is its share of the samples. Hover a box for its name and count.
"""
import html
import re
import sys
from collections import defaultdict


def fold(lines):
    stacks = defaultdict(int)
    frames = []
    comm = None
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if frames:
                stacks[";".join([comm or "?"] + frames[::-1])] += 1
            frames, comm = [], None
            continue
        if not line[0].isspace():
            comm = line.split()[0]
            frames = []
            continue
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        sym = parts[1]
        sym = re.sub(r"\+0x[0-9a-f]+", "", sym)
        sym = re.sub(r" \(.*\)$", "", sym)
        if sym == "[unknown]":
            m = re.search(r"\(([^)]*)\)", parts[1])
            sym = "[%s]" % (m.group(1).rsplit("/", 1)[-1] if m else "unknown")
        frames.append(sym.replace(";", ":"))
    if frames:
        stacks[";".join([comm or "?"] + frames[::-1])] += 1
    return stacks


def build_tree(stacks):
    root = {"n": 0, "c": {}}
    for st, n in stacks.items():
        node = root
        root["n"] += n
        for f in st.split(";"):
            node = node["c"].setdefault(f, {"n": 0, "c": {}})
            node["n"] += n
    return root


def color(name):
    h = sum(ord(c) for c in name)
    return "rgb(%d,%d,%d)" % (205 + h % 50, 80 + h * 7 % 120, 40 + h * 3 % 50)


def render(root, title, width=1200, row=16):
    total = root["n"] or 1
    boxes = []
    depth_max = [0]

    def walk(node, name, x, depth):
        w = node["n"] / total * width
        if w < 0.3:
            return
        depth_max[0] = max(depth_max[0], depth)
        boxes.append((x, depth, w, name, node["n"]))
        cx = x
        for k in sorted(node["c"]):
            walk(node["c"][k], k, cx, depth + 1)
            cx += node["c"][k]["n"] / total * width

    walk(root, "all", 0.0, 0)
    height = (depth_max[0] + 3) * row
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="monospace" font-size="11">' % (width, height),
           '<rect width="100%%" height="100%%" fill="#f8f8f0"/><text x="%d" y="14" text-anchor="middle" font-size="13">%s</text>' % (width // 2, html.escape(title))]
    for x, d, w, name, n in boxes:
        y = height - (d + 1) * row
        label = name if len(name) * 7 < w else name[: max(0, int(w / 7) - 2)] + ".." if w > 21 else ""
        out.append('<g><title>%s (%d samples, %.2f%%)</title><rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" rx="2"/>'
                   '<text x="%.1f" y="%d">%s</text></g>' % (html.escape(name), n, 100.0 * n / total, x, y, w, row - 1,
                                                           color(name), x + 3, y + row - 4, html.escape(label)))
    out.append("</svg>")
    return "\n".join(out)


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    out, folded, title = argv[1], None, "flame graph"
    i = 2
    while i < len(argv):
        if argv[i] == "--folded" and i + 1 < len(argv):
            folded = argv[i + 1]
            i += 2
        elif argv[i] == "--title" and i + 1 < len(argv):
            title = argv[i + 1]
            i += 2
        else:
            sys.stderr.write(__doc__)
            return 2
    stacks = fold(sys.stdin)
    if not stacks:
        sys.stderr.write("flamegraph.py: no samples in the input\n")
        return 1
    if folded:
        with open(folded, "w") as fh:
            for k in sorted(stacks):
                fh.write("%s %d\n" % (k, stacks[k]))
    with open(out, "w") as fh:
        fh.write(render(build_tree(stacks), title))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
