#!/usr/bin/env python3
"""Where onnxruntime spends a batch-1 pass of a .cxrm model, node by node: the counterpart of
`cxrm bench --profile`, on the graph `cxrm export` writes for the same file.

onnxruntime's own profiler times every node of `--runs` passes; the first `--warmup` are
dropped and each node's median is kept. Prints the time per operator type (onnxruntime's
optimised graph: convolutions may have become NCHWc `Conv` nodes with reorders around them)
and the slowest nodes, and writes them to --json.

Usage: python3 tools/onnx_profile.py MODEL.cxrm [--threads 1] [--runs 30] [--warmup 5]
           [--json out.json] [--cxrm target/release/cxrm]
Needs: pip install onnx onnxruntime.
"""
import argparse, collections, json, os, subprocess, tempfile
import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: onnxruntime's default)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json")
    ap.add_argument("--cxrm", default="target/release/cxrm")
    args = ap.parse_args()
    onnx_bytes = subprocess.run([args.cxrm, "export", args.model, "-o", "-"], capture_output=True,
                                check=True).stdout
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0]
        shape = [1] + [int(d) for d in feed.shape[1:]]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for _ in range(args.runs):
            session.run(None, {feed.name: x})
        with open(session.end_profiling()) as f:
            events = json.load(f)
    samples, op_of = collections.defaultdict(list), {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            samples[node].append(e["dur"] / 1000)
            op_of[node] = e["args"].get("op_name", "?")
    nodes = []
    for node, times in samples.items():
        kept = sorted(times[args.warmup:] or times)
        nodes.append({"name": node, "op": op_of[node], "ms": kept[len(kept) // 2]})
    by_op = collections.defaultdict(lambda: [0, 0.0])
    for n in nodes:
        by_op[n["op"]][0] += 1
        by_op[n["op"]][1] += n["ms"]
    total = sum(n["ms"] for n in nodes)
    print(f"onnxruntime {ort.__version__}, {args.threads or 'default'} thread(s): median of "
          f"{args.runs - args.warmup} passes per node, {total:.3f} ms in all")
    for op, (count, ms) in sorted(by_op.items(), key=lambda kv: -kv[1][1]):
        print(f"  {op:20} {count:5} {ms:9.3f} ms {100 * ms / total:5.1f}%")
    print("  slowest nodes:")
    for n in sorted(nodes, key=lambda n: -n["ms"])[: args.top]:
        print(f"  {n['name']:50} {n['op']:14} {n['ms']:.3f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"onnxruntime": ort.__version__, "threads": args.threads, "total_ms": total,
                       "ops": {op: {"nodes": c, "ms": ms} for op, (c, ms) in by_op.items()},
                       "nodes": nodes}, f, indent=1)


if __name__ == "__main__":
    main()
