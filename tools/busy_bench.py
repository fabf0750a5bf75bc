#!/usr/bin/env python3
"""Time cxrm's default thread count against `--threads 1` while other programs keep CPUs busy.

The default count should never be more than 10% slower than one thread when another
CPU-bound program shares the machine. This starts `--hogs` busy loops (separate processes,
each wanting a whole CPU), then runs `cxrm bench --json` at `--threads 0` and at
`--threads 1` in alternating rounds, the one that goes first swapping every round, and stops
the loops. Each round gives a pair: the default's time over one thread's.

Both the mean pass and the median pass are compared. The mean is the figure to judge by: a
split pass can be fast most of the time and then wait tens of milliseconds while the
scheduler gives the busy program back its share, which the median hides. The batch
throughput (images/s) is compared too. `--control` compares `--threads 1` with itself in
the same way, to show how far the machine alone moves a pair.

Usage: python3 tools/busy_bench.py MODEL.cxrm [--rounds 8] [--iters 100] [--hogs 1]
           [--batch 16] [--batch-iters 3] [--control] [--json out.json] [--cxrm BIN]
Needs only the Python standard library.
"""
import argparse, json, os, statistics, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_stats import cpu_name, median_interval  # noqa: E402

HOG = "while True:\n    pass\n"


def bench(cxrm_bin, model, threads, iters, batch, batch_iters):
    out = subprocess.run(
        [cxrm_bin, "bench", model, "--threads", threads, "--iters", str(iters),
         "--batch", str(batch), "--batch-iters", str(batch_iters), "--json"],
        capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    return {"median_ms": doc["batch1_median_ms"], "mean_ms": doc["batch1_mean_ms"],
            "p95_ms": doc["batch1_p95_ms"], "images_per_s": doc["images_per_s"],
            "threads": doc["threads"], "split_runs": doc.get("batch1_split_runs", 0),
            "runs": doc["batch1_runs"]}


def summary(ratios):
    return {"median": statistics.median(ratios), "median_ci95": median_interval(ratios),
            "min": min(ratios), "max": max(ratios), "pairs": ratios}


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=8, help="alternating pairs of runs")
    ap.add_argument("--iters", type=int, default=100, help="timed batch-1 passes per run")
    ap.add_argument("--hogs", type=int, default=1, help="busy loops to start")
    ap.add_argument("--batch", type=int, default=16, help="throughput batch size")
    ap.add_argument("--batch-iters", type=int, default=3, help="timed batches per run")
    ap.add_argument("--control", action="store_true",
                    help="compare --threads 1 with itself: how much the machine alone moves a pair")
    ap.add_argument("--json", help="write every run and the summary here")
    ap.add_argument("--cxrm", default=os.path.join(root, "target", "release", "cxrm"))
    args = ap.parse_args()

    settings = ["1", "1"] if args.control else ["0", "1"]
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
    runs = [[], []]
    try:
        print(f"model {args.model}; {cpu_name()}, {os.cpu_count()} cores; {args.hogs} busy "
              f"loop(s); {'--threads 1 against itself' if args.control else 'default against --threads 1'}")
        for r in range(args.rounds):
            order = [0, 1] if r % 2 == 0 else [1, 0]
            for i in order:
                runs[i].append(bench(args.cxrm, args.model, settings[i], args.iters,
                                     args.batch, args.batch_iters))
            a, b = runs[0][-1], runs[1][-1]
            print(f"round {r + 1:>2}: mean {a['mean_ms']:7.2f} / {b['mean_ms']:7.2f} ms = "
                  f"{a['mean_ms'] / b['mean_ms']:.2f}; median {a['median_ms']:7.2f} / "
                  f"{b['median_ms']:7.2f} ms; batch {a['images_per_s']:.0f} / "
                  f"{b['images_per_s']:.0f} images/s; first setting split {a['split_runs']} of "
                  f"{a['runs']} runs", flush=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()

    mean = summary([a["mean_ms"] / b["mean_ms"] for a, b in zip(*runs)])
    median = summary([a["median_ms"] / b["median_ms"] for a, b in zip(*runs)])
    thr = summary([a["images_per_s"] / b["images_per_s"] for a, b in zip(*runs)])
    for name, s in [("mean pass", mean), ("median pass", median), ("batch images/s", thr)]:
        ci = s["median_ci95"]
        ci = f" (95% {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
        print(f"{name:>15}: median pair {s['median']:.2f}{ci}, pairs {s['min']:.2f}-{s['max']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": os.path.basename(args.model), "cpu": cpu_name(),
                       "cores": os.cpu_count(), "hogs": args.hogs, "control": args.control,
                       "iters": args.iters, "batch": args.batch, "settings": settings,
                       "mean_ratio": mean, "median_ratio": median, "throughput_ratio": thr,
                       "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
