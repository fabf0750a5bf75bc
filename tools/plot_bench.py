#!/usr/bin/env python3
"""Draw `tools/onnx_bench.py` results as an SVG chart: one group of bars per model, one bar
per measure (batch-1 latency and batch throughput, at one thread and at the defaults), each
the median ratio of the rounds with a whisker, and a line at 1.0. The whiskers are the 95%
intervals of the medians where every file has them (`onnx_bench.py` with 6 rounds or more),
else the ranges of the rounds.

Latency is drawn as onnxruntime / cxrm (the inverse of the JSON's cxrm / onnxruntime ratio),
so that for every bar higher is better for cxrm and the line at 1.0 is parity.

Usage: python3 tools/plot_bench.py OUT.svg RESULT.json [RESULT.json ...] [--title TEXT]
           [--labels NAME ...]   (one per file: the groups' names, default the models')
Needs only the standard library.
"""
import argparse, json, os
from xml.sax.saxutils import escape

MEASURES = [  # (setting's threads, key, label, inverted)
    (1, "latency", "latency, 1 thread", True),
    (0, "latency", "latency, defaults", True),
    (1, "throughput", "throughput, 1 thread", False),
    (0, "throughput", "throughput, defaults", False),
]
COLOURS = ["#4c72b0", "#55a868", "#c44e52", "#8172b2"]


def has_intervals(result):
    """Whether every measure of a result file has a 95% interval for its median."""
    return all(s.get(f"{key}_ratio_median_ci95")
               for s in result["settings"] for key in ("latency", "throughput"))


def bars(result, intervals):
    """The four (median, low, high) speed-ups of one result file, higher better for cxrm;
    low and high from the 95% interval of the median with `intervals`, else the range."""
    by_threads = {s["threads"]: s for s in result["settings"]}
    out = []
    for threads, key, _, inverted in MEASURES:
        s = by_threads.get(threads)
        if s is None:
            out.append(None)
            continue
        spread = f"{key}_ratio_median_ci95" if intervals else f"{key}_ratio_range"
        median, (low, high) = s[f"{key}_ratio_median"], s[spread]
        if inverted:
            median, low, high = 1 / median, 1 / high, 1 / low
        out.append((median, low, high))
    return out


def svg(results, title):
    width, height = 760, 360
    left, right, top, bottom = 60, 20, 50, 70
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for _, bs in results for b in bs if b for v in b]
    ymax = max(2.0, max(values) * 1.05)
    y = lambda v: top + plot_h * (1 - v / ymax)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    tick = 0.0
    while tick <= ymax + 1e-9:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(tick):.1f}" '
                     f'y2="{y(tick):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
                     f'{tick:.1f}</text>')
        tick += 0.5
    parts.append(f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 14 {top + plot_h / 2})">cxrm speed / onnxruntime '
                 f'speed</text>')
    group_w = plot_w / len(results)
    bar_w = group_w * 0.8 / len(MEASURES)
    for g, (name, bs) in enumerate(results):
        x0 = left + g * group_w + group_w * 0.1
        for i, b in enumerate(bs):
            if b is None:
                continue
            median, low, high = b
            x = x0 + i * bar_w
            parts.append(f'<rect x="{x:.1f}" y="{y(median):.1f}" width="{bar_w * 0.9:.1f}" '
                         f'height="{y(0) - y(median):.1f}" fill="{COLOURS[i]}"/>')
            cx = x + bar_w * 0.45
            parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(high):.1f}" '
                         f'y2="{y(low):.1f}" stroke="black"/>')
            parts.append(f'<text x="{cx:.1f}" y="{y(high) - 4:.1f}" text-anchor="middle" '
                         f'font-size="10">{median:.2f}</text>')
        parts.append(f'<text x="{x0 + group_w * 0.4:.1f}" y="{top + plot_h + 18}" '
                     f'text-anchor="middle">{escape(name)}</text>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(1):.1f}" y2="{y(1):.1f}" '
                 f'stroke="black" stroke-dasharray="4 3"/>')
    for i, (_, _, label, _) in enumerate(MEASURES):
        lx = left + i * (plot_w / len(MEASURES))
        ly = height - 22
        parts.append(f'<rect x="{lx:.1f}" y="{ly - 10}" width="12" height="12" '
                     f'fill="{COLOURS[i]}"/>')
        parts.append(f'<text x="{lx + 16:.1f}" y="{ly}">{escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("results", nargs="+")
    ap.add_argument("--title", help="the chart's title (default: what the bars and whiskers are)")
    ap.add_argument("--labels", nargs="+",
                    help="each file's group name, in order (default: the model's file name), "
                         "for runs of one model before and after a change")
    args = ap.parse_args()
    if args.labels and len(args.labels) != len(args.results):
        ap.error(f"{len(args.labels)} labels for {len(args.results)} files")
    loaded = []
    for path in args.results:
        with open(path) as f:
            loaded.append((path, json.load(f)))
    intervals = all(has_intervals(result) for _, result in loaded)
    results = []
    for i, (path, result) in enumerate(loaded):
        name = os.path.splitext(os.path.basename(result.get("model", path)))[0]
        if args.labels:
            name = args.labels[i]
        results.append((name, bars(result, intervals)))
    whiskers = "95% intervals of the medians" if intervals else "range"
    title = args.title or f"cxrm against onnxruntime (medians of the rounds, whiskers: {whiskers})"
    with open(args.out, "w") as f:
        f.write(svg(results, title))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
