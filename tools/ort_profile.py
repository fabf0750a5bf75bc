#!/usr/bin/env python3
"""Where onnxruntime spends a pass of a .cxrm model: its per-node profile, summed by the same
kinds of layer as `cxrm bench --profile` (1x1, kxk and depthwise convolutions, pooling, ...).

The model is exported by `cxrm export`, as in tools/onnx_bench.py, and run on onnxruntime's CPU
provider with `SessionOptions.enable_profiling`. Each node's kernel time is the median over the
timed passes (after --warmup untimed ones). Convolutions are classified by their weight's shape
as onnxruntime reports it, [out, in/groups, kh, kw]: depthwise where in/groups is 1 and the
layer has more than one group, else 1x1 or kxk; onnxruntime's own layout passes (its NCHWc
reorders) are listed under their op names. Put it beside `cxrm bench MODEL --threads 1
--profile N` to see which kind of layer a runtime is behind on.

Usage: python3 tools/ort_profile.py MODEL.cxrm [--threads 1] [--runs 30] [--warmup 10]
           [--cxrm target/release/cxrm] [--top 15]
Needs: pip install onnx onnxruntime.
"""
import argparse, collections, json, os, statistics, subprocess, tempfile
import numpy as np
import onnx
import onnxruntime as ort


def export(model_path, cxrm_bin):
    """The model as ONNX bytes, written by `cxrm export`."""
    return subprocess.run([cxrm_bin, "export", model_path, "-o", "-"], capture_output=True,
                          check=True).stdout


def kind_of(op, shapes):
    """The kind of layer a profiled node is, from its op and its inputs' shapes."""
    if op == "Conv" and len(shapes) >= 2 and len(shapes[1]) == 4:
        out_channels, per_group, kh, kw = shapes[1]
        in_channels = shapes[0][1] if len(shapes[0]) > 1 else per_group
        if per_group == 1 and in_channels > 1:
            return f"depthwise{kh}x{kw}"
        return f"conv{kh}x{kw}"
    return op


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (0: onnxruntime's default)")
    ap.add_argument("--runs", type=int, default=30, help="timed passes")
    ap.add_argument("--warmup", type=int, default=10, help="untimed passes first")
    ap.add_argument("--top", type=int, default=15, help="slowest nodes listed")
    ap.add_argument("--batch", type=int, default=1,
                    help="images per pass; the times are then per image (a pass's over the batch)")
    ap.add_argument("--cxrm", default=os.path.join(root, "target", "release", "cxrm"))
    args = ap.parse_args()

    data = export(args.model, args.cxrm)
    graph = onnx.load_from_string(data).graph
    shape = [d.dim_value or 1 for d in graph.input[0].type.tensor_type.shape.dim]
    shape[0] = args.batch
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = os.path.join(folder, "ort")
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.random.default_rng(0).random(shape, np.float32)}
        for _ in range(args.warmup + args.runs):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)

    # Each node's kernel times in pass order; the first `warmup` are dropped.
    times = collections.defaultdict(list)
    kinds = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        times[name].append(e["dur"] / 1000.0 / args.batch)
        shapes = [next(iter(s.values())) for s in e["args"].get("input_type_shape", [])]
        kinds[name] = kind_of(e["args"].get("op_name", "?"), shapes)
    medians = {name: statistics.median(t[args.warmup:] or t) for name, t in times.items()}
    total = sum(medians.values())
    by_kind = collections.defaultdict(lambda: [0, 0.0])
    for name, ms in medians.items():
        by_kind[kinds[name]][0] += 1
        by_kind[kinds[name]][1] += ms

    per = f", per image of batches of {args.batch}" if args.batch > 1 else ""
    print(f"onnxruntime {ort.__version__}, {args.threads or 'default'} thread(s): median of "
          f"{args.runs} passes per node{per}, {total:.3f} ms in all")
    print(f"  {'kind':16s} {'nodes':>6s} {'ms':>10s} {'share':>7s}")
    for kind, (count, ms) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
        print(f"  {kind:16s} {count:6d} {ms:10.3f} {100 * ms / total:6.1f}%")
    print("  slowest nodes:")
    for name, ms in sorted(medians.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"  {name:44s} {kinds[name]:14s} {ms:8.3f} ms")


if __name__ == "__main__":
    main()
