#!/usr/bin/env python3
"""Draw tools/busy_bench.py results: each pair's default / one-thread ratio, one row per file.

Each row shows the pairs' ratios of the mean pass as dots and of the median pass as rings,
against the 1.10 bound (the default count may be at most 10% slower than one thread while
another program keeps a CPU busy). Plain SVG, no plotting library.

Usage: python3 tools/plot_busy.py out.svg busy_a.json [busy_b.json ...]
"""
import json, os, sys


def main():
    out, files = sys.argv[1], sys.argv[2:]
    docs = [json.load(open(f)) for f in files]
    pairs = [r for d in docs for key in ("mean_ratio", "median_ratio") for r in d[key]["pairs"]]
    low, high = min(0.8, min(pairs) - 0.05), max(1.2, max(pairs) + 0.05)
    width, left, right, row, top = 760, 300, 30, 34, 40
    height = top + row * len(docs) + 50
    x = lambda v: left + (v - low) / (high - low) * (width - left - right)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">Default threads / '
           'one thread, with a busy loop running (each pair of runs)</text>']
    bottom = top + row * len(docs)
    tick = round(low, 1)
    while tick <= high:
        svg.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top}" y2="{bottom}" stroke="#ddd"/>')
        svg.append(f'<text x="{x(tick):.1f}" y="{bottom + 16}" text-anchor="middle">{tick:.1f}</text>')
        tick = round(tick + 0.1, 1)
    for bound, colour in [(1.0, "black"), (1.1, "#c44e52")]:
        svg.append(f'<line x1="{x(bound):.1f}" x2="{x(bound):.1f}" y1="{top}" y2="{bottom}" '
                   f'stroke="{colour}" stroke-dasharray="4 3"/>')
    for i, (f, d) in enumerate(zip(files, docs)):
        y = top + row * i + row / 2
        label = os.path.splitext(os.path.basename(f))[0]
        if d.get("control"):
            label += " (one thread against itself)"
        svg.append(f'<text x="{left - 10}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
        for r in d["mean_ratio"]["pairs"]:
            svg.append(f'<circle cx="{x(r):.1f}" cy="{y - 4:.1f}" r="4" fill="#4c72b0" fill-opacity="0.7"/>')
        for r in d["median_ratio"]["pairs"]:
            svg.append(f'<circle cx="{x(r):.1f}" cy="{y + 5:.1f}" r="4" fill="none" stroke="#55a868"/>')
    svg.append(f'<circle cx="{left}" cy="{height - 14}" r="4" fill="#4c72b0"/>'
               f'<text x="{left + 10}" y="{height - 10}">mean pass</text>')
    svg.append(f'<circle cx="{left + 110}" cy="{height - 14}" r="4" fill="none" stroke="#55a868"/>'
               f'<text x="{left + 120}" y="{height - 10}">median pass</text>')
    svg.append(f'<line x1="{left + 230}" x2="{left + 250}" y1="{height - 14}" y2="{height - 14}" '
               'stroke="#c44e52" stroke-dasharray="4 3"/>'
               f'<text x="{left + 256}" y="{height - 10}">the 10% bound</text>')
    svg.append("</svg>")
    with open(out, "w") as fh:
        fh.write("\n".join(svg) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
