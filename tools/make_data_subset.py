#!/usr/bin/env python3
"""Cut the small real subsets bundled in fixtures/data/ from the full sets in ../shared/data.

The first TRAIN training images and the first TEST test images of MNIST and Fashion-MNIST,
as gzip'd IDX files with the standard names, so that `cxrm eval --data mnist` (and the study)
run on a fresh machine without the full sets. Deterministic: the same input gives the same
bytes (gzip mtime 0).

Usage: python3 tools/make_data_subset.py [--train 4000] [--test 1000]
"""
import argparse, gzip, os, struct


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = list(struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim]))
    return data[:4], dims, data[4 + 4 * ndim:]


def write_idx(path, magic, dims, body):
    raw = magic + struct.pack(">" + "I" * len(dims), *dims) + body
    with open(path, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0, compresslevel=9) as g:
            g.write(raw)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--test", type=int, default=1000)
    args = ap.parse_args()
    for name in ("mnist", "fashion-mnist"):
        src = os.path.join(root, "..", "shared", "data", name)
        dst = os.path.join(root, "fixtures", "data", name)
        os.makedirs(dst, exist_ok=True)
        for split, n in (("train", args.train), ("t10k", args.test)):
            for kind in ("images-idx3", "labels-idx1"):
                fname = f"{split}-{kind}-ubyte.gz"
                magic, dims, body = read_idx(os.path.join(src, fname))
                per = 1
                for d in dims[1:]:
                    per *= d
                write_idx(os.path.join(dst, fname), magic, [n] + dims[1:], body[:n * per])
        print(f"wrote {dst}")


if __name__ == "__main__":
    main()
