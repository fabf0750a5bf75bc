#!/usr/bin/env python3
"""Compare cxrm's runtime against onnxruntime on the same model, in the same run.

The .cxrm file is exported to ONNX by `cxrm export` and timed with onnxruntime at batch 1; then
`cxrm bench` times the same file, in alternating rounds.
Prints each round's medians and ratio, and the median ratio. When the model is a runtime
fixture with expected logits, the ONNX output for the fixture's input is checked against them
too.

Usage: python3 tools/onnx_bench.py MODEL.cxrm [--runs 500] [--rounds 7] [--threads N] [--cxrm target/release/cxrm]
Needs: pip install onnx onnxruntime (plus tools/requirements.txt).
"""
import argparse, json, os, re, statistics, subprocess, sys, time
import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cxrm_reader  # noqa: E402


def to_onnx(model_path, cxrm_bin):
    """The model as ONNX, written by `cxrm export` (so what is timed is the exporter's graph)."""
    f = cxrm_reader.open_path(model_path)
    meta = f.metadata()
    c, h, w = (int(v) for v in meta["input.shape"])
    data = subprocess.run([cxrm_bin, "export", model_path, "-o", "-"], capture_output=True,
                          check=True).stdout
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model)
    return model, (c, h, w), meta


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


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--runs", type=int, default=500, help="timed runs per round, each runtime")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds of both runtimes")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    ap.add_argument("--cxrm", default=os.path.join(root, "target", "release", "cxrm"))
    args = ap.parse_args()
    model, shape, meta = to_onnx(args.model, args.cxrm)
    so = ort.SessionOptions()
    if args.threads:
        so.intra_op_num_threads = args.threads
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1,) + shape).astype(np.float32)
    for _ in range(20):
        sess.run(None, {"input": x})
    expected = os.path.splitext(args.model)[0] + ".logits.json"
    if os.path.exists(expected):
        doc = json.load(open(expected))
        want = np.array(doc["logits"], np.float32)
        got = sess.run(None, {"input": fixture_input(meta, shape, doc)})[0][0]
        err = float(np.max(np.abs(got - want)) / max(1e-6, float(np.max(np.abs(want)))))
        print(f"onnxruntime logits vs {os.path.basename(expected)}: max relative difference {err:.2e}")

    def time_ort():
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            sess.run(None, {"input": x})
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3

    def time_cxrm():
        out = subprocess.run([args.cxrm, "bench", args.model, "--iters", str(args.runs)],
                             capture_output=True, text=True, check=True).stdout
        return float(re.search(r"batch 1\s+median ([0-9.]+) ms", out).group(1))

    # Rounds alternate the two runtimes, so a slow minute on this shared machine falls on
    # both; the median of the per-round ratios is the figure to quote.
    print(f"model        {args.model}")
    print(f"onnxruntime  {ort.__version__}, threads={args.threads or 'default'}; {args.runs} runs per round at batch 1")
    ratios = []
    for r in range(args.rounds):
        ort_ms, cxrm_ms = time_ort(), time_cxrm()
        ratios.append(cxrm_ms / ort_ms)
        print(f"round {r + 1:>2}     onnxruntime median {ort_ms:.4f} ms, cxrm median {cxrm_ms:.4f} ms, ratio {ratios[-1]:.2f}")
    print(f"ratio        cxrm / onnxruntime = {statistics.median(ratios):.2f} "
          f"(median of {len(ratios)} rounds; range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
