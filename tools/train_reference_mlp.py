#!/usr/bin/env python3
"""Train LeNet-300-100 on MNIST with plain numpy and save it as safetensors.

A stand-in source of *real trained weights* for the Deep Compression benchmarks
(`cargo bench --bench deep`) until cxrm's own trainer lands. Weight distributions of trained
networks (peaked at zero, heavy-tailed) are what pruning, k-means and Huffman coding are
designed for; random weights would give misleading numbers.

Usage: python3 tools/train_reference_mlp.py [--data ../shared/data/mnist] [--out PATH] [--epochs N]
Prints the test accuracy. Deterministic for a given --seed.
"""
import argparse, gzip, json, os, struct, sys, time
import numpy as np


def load_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def save_safetensors(path, tensors, metadata):
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    os.replace(tmp, path)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(root, "..", "shared", "data", "mnist"))
    ap.add_argument("--out", default=os.path.join(root, "target", "cxrm-bench", "lenet300.safetensors"))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    x = load_idx(os.path.join(args.data, "train-images-idx3-ubyte.gz")).reshape(-1, 784).astype(np.float32) / 255.0
    y = load_idx(os.path.join(args.data, "train-labels-idx1-ubyte.gz")).astype(np.int64)
    xt = load_idx(os.path.join(args.data, "t10k-images-idx3-ubyte.gz")).reshape(-1, 784).astype(np.float32) / 255.0
    yt = load_idx(os.path.join(args.data, "t10k-labels-idx1-ubyte.gz")).astype(np.int64)
    mean, std = 0.1307, 0.3081
    x, xt = (x - mean) / std, (xt - mean) / std
    rng = np.random.default_rng(args.seed)
    sizes = [784, 300, 100, 10]
    W = [rng.normal(0, np.sqrt(2.0 / a), (b, a)).astype(np.float32) for a, b in zip(sizes, sizes[1:])]
    B = [np.zeros(b, np.float32) for b in sizes[1:]]
    mW = [np.zeros_like(w) for w in W]
    mB = [np.zeros_like(b) for b in B]
    lr, mom, wd, bs = 0.05, 0.9, 1e-4, 64

    def forward(inp):
        acts = [inp]
        for i, (w, b) in enumerate(zip(W, B)):
            z = acts[-1] @ w.T + b
            acts.append(np.maximum(z, 0) if i < 2 else z)
        return acts

    t0 = time.time()
    for epoch in range(args.epochs):
        order = rng.permutation(len(x))
        for s in range(0, len(x), bs):
            idx = order[s:s + bs]
            acts = forward(x[idx])
            logits = acts[-1]
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(idx)), y[idx]] -= 1
            g = p / len(idx)
            for i in (2, 1, 0):
                gw, gb = g.T @ acts[i] + wd * W[i], g.sum(0)
                if i > 0:
                    g = (g @ W[i]) * (acts[i] > 0)
                mW[i] = mom * mW[i] + gw
                mB[i] = mom * mB[i] + gb
                W[i] -= lr * mW[i]
                B[i] -= lr * mB[i]
        lr *= 0.5
        acc = (forward(xt)[-1].argmax(1) == yt).mean()
        print(f"epoch {epoch + 1}/{args.epochs}: test accuracy {acc:.4f} ({time.time() - t0:.0f}s)", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    names = ["fc1", "fc2", "fc3"]
    tensors = {}
    for n, w, b in zip(names, W, B):
        tensors[f"{n}.weight"], tensors[f"{n}.bias"] = w, b
    save_safetensors(args.out, tensors, {"model.name": "lenet-300-100", "train.test_accuracy": f"{acc:.4f}",
                                          "train.source": "tools/train_reference_mlp.py"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
