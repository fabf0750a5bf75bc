#!/usr/bin/env python3
"""Compare cxrm's runtime against onnxruntime on the same model, in the same run.

The .cxrm file is exported to ONNX by `cxrm export` (so onnxruntime runs the exporter's graph of
the same weights) and both runtimes are timed in alternating rounds: onnxruntime, then
`cxrm bench --json`, then onnxruntime again, and so on, the one that goes first swapping every
round. A slow minute on a shared machine then falls on both, and the median of the per-round
ratios is the figure to quote. With it come a 95% confidence interval for that median (from
the order statistics of the rounds' ratios, so no assumption about the noise's distribution;
at least 6 rounds) and the number of rounds each runtime won: on a busy machine, many short
rounds (say `--rounds 21 --runs 20`) give a narrower interval than a few long ones.

Each round times batch 1 (median latency) and a throughput batch (images/s), at each thread
setting asked for: 1 (one thread each) and 0 (each runtime's default: onnxruntime's intra-op
pool, cxrm's one thread per available core). The summary and every round go to --json.

Each round also records how far apart cxrm found two CPUs (`cxrm bench`'s cache-line round
trips, before and after its runs). A virtual machine's host can place its CPUs on different
dies for minutes at a time, which slows both runtimes' two-thread passes; the summary then
gives the medians of the rounds where the CPUs were near and where they were far apart.

When the model is a runtime fixture with expected logits, the ONNX output for the fixture's
input is checked against them too.

Usage: python3 tools/onnx_bench.py MODEL.cxrm [--runs 100] [--batch 16] [--batch-runs 5]
           [--rounds 5] [--threads 1 0] [--json out.json] [--cxrm target/release/cxrm]
Needs: pip install onnx onnxruntime (plus tools/requirements.txt).
"""
import argparse, json, math, os, statistics, subprocess, sys, time
import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cxrm_reader  # noqa: E402
from bench_stats import cpu_name, far_boundary, median_interval  # noqa: E402


def to_onnx(model_path, cxrm_bin):
    """The model as ONNX, written by `cxrm export` (so what is timed is the exporter's graph)."""
    f = cxrm_reader.open_path(model_path)
    meta = f.metadata()
    shape = tuple(int(v) for v in meta["input.shape"])
    data = subprocess.run([cxrm_bin, "export", model_path, "-o", "-"], capture_output=True,
                          check=True).stdout
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    return model, shape, meta


def fixture_input(meta, shape, expected):
    """The input a runtime fixture's logits are for: its `pixels` (a real image) when it has
    them, else the synthetic (7y + 3x) mod 256 pattern."""
    c, h, w = shape
    if "pixels" in expected:
        px = np.array(expected["pixels"], np.float32).reshape(h, w) / 255.0
    else:
        px = np.array([[(7 * y + 3 * x) % 256 for x in range(w)] for y in range(h)], np.float32) / 255.0
    mean, std = float(meta["input.mean"][0]), float(meta["input.std"][0])
    return ((px - mean) / std).reshape(1, c, h, w).astype(np.float32)


class OrtRunner:
    """One onnxruntime session per thread setting, warmed up once."""

    def __init__(self, model, shape, threads):
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(model.SerializeToString(), so,
                                         providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name
        rng = np.random.default_rng(0)
        self.one = rng.standard_normal((1,) + shape).astype(np.float32)
        self.shape = shape
        for _ in range(10):
            self.sess.run(None, {self.name: self.one})

    def latency_ms(self, runs):
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            self.sess.run(None, {self.name: self.one})
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3

    def images_per_s(self, batch, runs):
        x = np.random.default_rng(1).standard_normal((batch,) + self.shape).astype(np.float32)
        self.sess.run(None, {self.name: x})
        t = time.perf_counter()
        for _ in range(runs):
            self.sess.run(None, {self.name: x})
        return batch * runs / (time.perf_counter() - t)


def cxrm_round(cxrm_bin, model_path, threads, runs, batch, batch_runs):
    out = subprocess.run([cxrm_bin, "bench", model_path, "--json", "--threads", str(threads),
                          "--iters", str(runs), "--batch", str(batch), "--batch-iters",
                          str(batch_runs)], capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    # A cache line's round trip between two CPUs before and after cxrm's runs (None where
    # unmeasured): far-apart CPUs slow both runtimes' split passes (docs/performance/threads.md).
    trips = doc.get("cpu_round_trip_ns") or [None, None]
    return doc["batch1_median_ms"], doc["images_per_s"], doc["threads"], trips, doc.get(
        "instruction_set")


def avx512_visible():
    """Whether this process sees AVX-512, as numpy's own `cpuid` check found it: False on an
    AVX2-only CPU and under tools/avx2_only.sh, which hides it from onnxruntime as well."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__
    return bool(__cpu_features__.get("AVX512F"))


def by_cpu_distance(rounds):
    """The rounds' ratios split by how far apart cxrm found the CPUs: `near` where both of a
    round's round trips were below the run's far boundary (`far_boundary`), `far` where both
    were above it (rounds whose state changed between the two timings, or with a trip not
    measured, are in neither); `one placement` holding every round where the trips show no
    such step, since whether that one placement was near or far is not known from the run
    alone (its median round trip says). None where no round's trips were measured (one CPU,
    or an older cxrm)."""
    timed = [r for r in rounds if None not in r["cpu_round_trip_ns"]]
    if not timed:
        return None
    trips = [t for r in timed for t in r["cpu_round_trip_ns"]]
    boundary = far_boundary(trips)
    if not math.isfinite(boundary):
        groups = {"one placement": timed}
    else:
        groups = {"near": [], "far": []}
        for r in timed:
            far = [t > boundary for t in r["cpu_round_trip_ns"]]
            if far[0] == far[1]:
                groups["far" if far[0] else "near"].append(r)
    return {name: {"rounds": len(g), "shortest_round_trip_ns": min(trips),
                   "median_round_trip_ns": statistics.median(
                       t for r in g for t in r["cpu_round_trip_ns"]),
                   "far_boundary_ns": boundary if math.isfinite(boundary) else None,
                   "latency_ratio_median": statistics.median(r["latency_ratio"] for r in g),
                   "throughput_ratio_median": statistics.median(r["throughput_ratio"] for r in g),
                   "ort_ms_median": statistics.median(r["ort_ms"] for r in g),
                   "cxrm_ms_median": statistics.median(r["cxrm_ms"] for r in g)}
            for name, g in groups.items() if g}


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--runs", type=int, default=100, help="timed batch-1 runs per round, each runtime")
    ap.add_argument("--batch", type=int, default=16, help="throughput batch size")
    ap.add_argument("--batch-runs", type=int, default=5, help="timed throughput batches per round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of both runtimes")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0],
                    help="thread settings to measure (0: each runtime's default)")
    ap.add_argument("--json", help="write the rounds and the summary here")
    ap.add_argument("--cxrm", default=os.path.join(root, "target", "release", "cxrm"))
    args = ap.parse_args()
    model, shape, meta = to_onnx(args.model, args.cxrm)

    expected = os.path.splitext(args.model)[0] + ".logits.json"
    if os.path.exists(expected):
        doc = json.load(open(expected))
        want = np.array(doc["logits"], np.float32)
        probe = OrtRunner(model, shape, 1)
        got = probe.sess.run(None, {probe.name: fixture_input(meta, shape, doc)})[0][0]
        err = float(np.max(np.abs(got - want)) / max(1e-6, float(np.max(np.abs(want)))))
        print(f"onnxruntime logits vs {os.path.basename(expected)}: max relative difference {err:.2e}")

    report = {
        "model": os.path.basename(args.model),
        "input_shape": list(shape),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "onnxruntime": ort.__version__,
        # What each runtime's kernels were chosen for: onnxruntime's follow this process's
        # `cpuid`, cxrm reports its level (rounds' `cxrm_instruction_set`).
        "avx512_visible": avx512_visible(),
        "runs": args.runs, "batch": args.batch, "batch_runs": args.batch_runs,
        "settings": [],
    }
    print(f"model        {args.model} {shape}")
    print(f"onnxruntime  {ort.__version__}; {report['cpu']}, {report['cores']} cores; AVX-512 "
          f"{'visible' if report['avx512_visible'] else 'not visible (an AVX2 CPU, or hidden)'}")
    for threads in args.threads:
        runner = OrtRunner(model, shape, threads)
        rounds = []
        label = "default" if threads == 0 else str(threads)
        print(f"threads {label}: batch 1 ({args.runs} runs) and batch {args.batch} "
              f"({args.batch_runs} runs) per round")
        for r in range(args.rounds):
            def ort_side():
                return runner.latency_ms(args.runs), runner.images_per_s(args.batch, args.batch_runs)

            def cxrm_side():
                return cxrm_round(args.cxrm, args.model, threads, args.runs, args.batch,
                                  args.batch_runs)

            if r % 2 == 0:
                (ort_ms, ort_ips), (cx_ms, cx_ips, cx_threads, trips, isa) = ort_side(), cxrm_side()
            else:
                (cx_ms, cx_ips, cx_threads, trips, isa), (ort_ms, ort_ips) = cxrm_side(), ort_side()
            row = {"ort_ms": ort_ms, "cxrm_ms": cx_ms, "latency_ratio": cx_ms / ort_ms,
                   "ort_images_per_s": ort_ips, "cxrm_images_per_s": cx_ips,
                   "throughput_ratio": cx_ips / ort_ips, "cxrm_threads": cx_threads,
                   "cxrm_instruction_set": isa,
                   "cpu_round_trip_ns": trips}
            rounds.append(row)
            cores = ("" if None in trips else
                     f" | CPUs' round trip {trips[0]:.0f}/{trips[1]:.0f} ns")
            print(f"  round {r + 1}: batch 1 onnxruntime {ort_ms:8.3f} ms, cxrm {cx_ms:8.3f} ms, "
                  f"ratio {row['latency_ratio']:.2f} | batch {args.batch} onnxruntime "
                  f"{ort_ips:7.1f}/s, cxrm {cx_ips:7.1f}/s, ratio {row['throughput_ratio']:.2f}"
                  f"{cores}")
        lat = [r["latency_ratio"] for r in rounds]
        thr = [r["throughput_ratio"] for r in rounds]
        summary = {
            "threads": threads,
            "latency_ratio_median": statistics.median(lat),
            "latency_ratio_range": [min(lat), max(lat)],
            "latency_ratio_median_ci95": median_interval(lat),
            "rounds_cxrm_faster": sum(x < 1 for x in lat),
            "throughput_ratio_median": statistics.median(thr),
            "throughput_ratio_range": [min(thr), max(thr)],
            "throughput_ratio_median_ci95": median_interval(thr),
            "rounds_cxrm_more_images": sum(x > 1 for x in thr),
            "ort_ms_median": statistics.median(r["ort_ms"] for r in rounds),
            "cxrm_ms_median": statistics.median(r["cxrm_ms"] for r in rounds),
            "rounds": rounds,
        }
        distance = by_cpu_distance(rounds)
        if distance:
            summary["by_cpu_distance"] = distance
        report["settings"].append(summary)
        def interval(ci):
            return "n/a, fewer than 6 rounds" if ci is None else f"{ci[0]:.2f}-{ci[1]:.2f}"

        print(f"  latency    cxrm / onnxruntime = {summary['latency_ratio_median']:.2f} "
              f"(median of {len(lat)} rounds; 95% interval {interval(summary['latency_ratio_median_ci95'])}; "
              f"range {min(lat):.2f}-{max(lat):.2f}; cxrm faster in {summary['rounds_cxrm_faster']}; "
              f"lower is better)")
        print(f"  throughput cxrm / onnxruntime = {summary['throughput_ratio_median']:.2f} "
              f"(95% interval {interval(summary['throughput_ratio_median_ci95'])}; "
              f"range {min(thr):.2f}-{max(thr):.2f}; higher is better)")
        first = next(iter((distance or {}).values()), {})
        if first.get("far_boundary_ns"):
            print(f"  CPUs far apart above a round trip of {first['far_boundary_ns']:.0f} ns "
                  "(the widest step between the run's round trips)")
        elif first:
            print("  CPUs in one placement throughout (no step between the round trips): round "
                  f"trips {first['shortest_round_trip_ns']:.0f} ns at the shortest, "
                  f"{first['median_round_trip_ns']:.0f} the median")
        for name, g in (distance or {}).items():
            print(f"  CPUs {name:4s}  {g['rounds']} rounds: latency {g['latency_ratio_median']:.2f} "
                  f"(onnxruntime {g['ort_ms_median']:.3f} ms, cxrm {g['cxrm_ms_median']:.3f}), "
                  f"throughput {g['throughput_ratio_median']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
