#!/usr/bin/env python3
"""Draw each round of `tools/onnx_bench.py` results against how far apart the CPUs were: one
panel per model, each round's batch-1 time of both runtimes (at the setting asked for, the
default threads unless --threads says) over the cache-line round trip that cxrm timed
between two CPUs in that round (log scale). The host of a virtual machine places its CPUs
near or far apart for minutes at a time (docs/performance/threads.md, "CPUs far apart"), and
the two-thread passes of both runtimes come in one speed for each placement; this shows which.

A round is drawn at the geometric mean of its two round trips, hollow where they lie on both
sides of the run's far boundary (`bench_stats.far_boundary`, the rule `onnx_bench.py` splits
its near and far rounds by): the placement changed during the round. Dashed lines give each
runtime's median at one thread where the file has that setting. One panel per file.

Usage: python3 tools/plot_rounds.py OUT.svg RESULT.json [RESULT.json ...] [--threads 0]
Needs only the standard library.
"""
import argparse, json, math, os, sys
from xml.sax.saxutils import escape

from bench_stats import far_boundary

RUNTIMES = [("ort_ms", "onnxruntime", "#4c72b0"), ("cxrm_ms", "cxrm", "#c44e52")]
PANEL_W, PANEL_H, LEFT, TOP, BOTTOM = 360, 280, 60, 60, 50
TRIP_RANGE = (20.0, 1000.0)


def rounds_of(result, threads):
    """The rounds of the setting with `threads` that timed both round trips; None where the
    file has no such setting."""
    for s in result["settings"]:
        if s["threads"] == threads:
            return [r for r in s["rounds"]
                    if len(r.get("cpu_round_trip_ns") or []) == 2
                    and None not in r["cpu_round_trip_ns"]]
    return None


def one_thread_medians(result):
    for s in result["settings"]:
        if s["threads"] == 1:
            return {key: s.get(f"{key}_median") for key, _, _ in RUNTIMES}
    return {}


def panel(title, result, threads, x0):
    """The SVG of one file's panel, its left edge at `x0`."""
    points, lines = [], {}
    rounds = rounds_of(result, threads)
    if rounds is None:
        print(f"{title}: no setting with --threads {threads}", file=sys.stderr)
        rounds = []
    boundary = far_boundary([t for r in rounds for t in r["cpu_round_trip_ns"]])
    for r in rounds:
        a, b = (max(t, 1.0) for t in r["cpu_round_trip_ns"])
        changed = (a > boundary) != (b > boundary)
        points.append((math.sqrt(a * b), r, changed))
    for key, value in one_thread_medians(result).items():
        if value:
            lines[key] = [value]
    times = [r[key] for _, r, _ in points for key, _, _ in RUNTIMES]
    times += [v for vs in lines.values() for v in vs]
    if not times:
        return ""
    top_ms = max(max(times) * 1.1, 1e-6)
    plot_w, plot_h = PANEL_W - LEFT - 10, PANEL_H - TOP - BOTTOM
    lo, hi = (math.log10(t) for t in TRIP_RANGE)

    def x(trip):
        t = min(max(trip, TRIP_RANGE[0]), TRIP_RANGE[1])
        return x0 + LEFT + (math.log10(t) - lo) / (hi - lo) * plot_w

    def y(ms):
        return TOP + plot_h - ms / top_ms * plot_h

    out = [f'<text x="{x0 + LEFT + plot_w / 2:.1f}" y="{TOP - 14}" text-anchor="middle" '
           f'font-size="12">{escape(title)}</text>']
    for i in range(6):
        ms = top_ms * i / 5
        out.append(f'<line x1="{x0 + LEFT}" x2="{x0 + LEFT + plot_w}" y1="{y(ms):.1f}" '
                   f'y2="{y(ms):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 + LEFT - 6}" y="{y(ms) + 4:.1f}" text-anchor="end">'
                   f'{ms:.1f}</text>')
    for trip in (20, 50, 100, 200, 500, 1000):
        out.append(f'<line x1="{x(trip):.1f}" x2="{x(trip):.1f}" y1="{TOP}" '
                   f'y2="{TOP + plot_h}" stroke="#eee"/>')
        out.append(f'<text x="{x(trip):.1f}" y="{TOP + plot_h + 16}" '
                   f'text-anchor="middle">{trip}</text>')
    out.append(f'<text x="{x0 + LEFT + plot_w / 2:.1f}" y="{TOP + plot_h + 34}" '
               f'text-anchor="middle">round trip between the CPUs, ns</text>')
    out.append(f'<text x="{x0 + 14}" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 {x0 + 14} {TOP + plot_h / 2:.1f})">batch 1, ms</text>')
    for key, name, colour in RUNTIMES:
        for value in lines.get(key, []):
            out.append(f'<line x1="{x0 + LEFT}" x2="{x0 + LEFT + plot_w}" y1="{y(value):.1f}" '
                       f'y2="{y(value):.1f}" stroke="{colour}" stroke-dasharray="5 4" '
                       f'stroke-width="1"><title>{escape(name)}, one thread: {value:.2f} ms'
                       f'</title></line>')
        for trip, r, changed in points:
            fill = "none" if changed else colour
            out.append(f'<circle cx="{x(trip):.1f}" cy="{y(r[key]):.1f}" r="3.5" '
                       f'fill="{fill}" stroke="{colour}" fill-opacity="0.7"><title>'
                       f'{escape(name)} {r[key]:.2f} ms at {trip:.0f} ns</title></circle>')
    return "\n".join(out)


def svg(panels, threads):
    width = PANEL_W * len(panels) + 20
    height = PANEL_H + 40
    setting = "the default threads" if threads == 0 else f"{threads} thread(s)"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">Each round at '
             f'{setting} against how far apart the CPUs were (hollow: placement changed in '
             f'the round; dashed: one thread)</text>']
    for i, (title, result) in enumerate(panels):
        parts.append(panel(title, result, threads, 10 + i * PANEL_W))
    legend_x = 20
    for _, name, colour in RUNTIMES:
        parts.append(f'<circle cx="{legend_x}" cy="{height - 12}" r="4" fill="{colour}"/>')
        parts.append(f'<text x="{legend_x + 8}" y="{height - 8}">{escape(name)}</text>')
        legend_x += 110
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("results", nargs="+")
    ap.add_argument("--threads", type=int, default=0,
                    help="the setting drawn: 0 for the default threads, 1 for one thread")
    args = ap.parse_args()
    panels = []
    for path in args.results:
        with open(path) as f:
            panels.append((os.path.splitext(os.path.basename(path))[0], json.load(f)))
    with open(args.out, "w") as f:
        f.write(svg(panels, args.threads))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
