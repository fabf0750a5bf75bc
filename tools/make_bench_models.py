#!/usr/bin/env python3
"""Build the runtime benchmark's models: three Keras CNNs with random weights, imported into .cxrm.

  xception.cxrm        keras.applications.Xception, 150x150x3, 2 classes (the pneumonia
                       classifier's architecture: 21M parameters, 34 separable convolutions)
  mobilenet_v2.cxrm    keras.applications.MobileNetV2, 224x224x3, 2 classes
  vgg16.cxrm           keras.applications.VGG16, 224x224x3, 2 classes
  xception_pruned.cxrm xception.cxrm with every weight tensor magnitude-pruned to 30% of its
                       weights (`cxrm pack --prune 0.7`, the same graph)

Random weights are enough for speed: the runtime's work does not depend on the values. The
models are written to OUT (default: bench-models/, which git ignores) and are not committed.
Then time each against onnxruntime:

  python3 tools/onnx_bench.py bench-models/xception.cxrm --json xception.json

Usage: python3 tools/make_bench_models.py [--out bench-models] [--only xception,vgg16]
           [--cxrm target/release/cxrm]
Needs: pip install keras torch (Keras 3 on the torch backend).
"""
import argparse, json, os, subprocess, sys

os.environ.setdefault("KERAS_BACKEND", "torch")

MODELS = {
    # name: (keras.applications constructor, input height/width)
    "xception": ("Xception", 150),
    "mobilenet_v2": ("MobileNetV2", 224),
    "vgg16": ("VGG16", 224),
}


def build(name, out, cxrm):
    import keras
    ctor, size = MODELS[name]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, ctor)(weights=None, input_shape=(size, size, 3),
                                              classes=2, classifier_activation=None)
    keras_path = os.path.join(out, f"{name}.keras")
    model.save(keras_path)
    cxrm_path = os.path.join(out, f"{name}.cxrm")
    subprocess.run([cxrm, "import", keras_path, "-o", cxrm_path], check=True)
    print(f"{name}: {model.count_params()} parameters, {size}x{size}x3 -> {cxrm_path}")
    return cxrm_path


def pruned(dense_path, out, cxrm, sparsity=0.7):
    """The same graph with each weight tensor pruned by magnitude (Deep Compression's storage
    step): decoded to safetensors, the graph taken from `inspect --json`, packed again."""
    base = os.path.splitext(os.path.basename(dense_path))[0]
    tensors = os.path.join(out, f"{base}.safetensors")
    graph = os.path.join(out, f"{base}.graph.json")
    subprocess.run([cxrm, "convert", dense_path, "-o", tensors], check=True)
    doc = json.loads(subprocess.run([cxrm, "inspect", dense_path, "--json"], check=True,
                                    capture_output=True, text=True).stdout)
    with open(graph, "w") as f:
        json.dump({"nodes": doc["graph"], "metadata": doc["metadata"]}, f)
    target = os.path.join(out, f"{base}_pruned.cxrm")
    subprocess.run([cxrm, "pack", tensors, "--graph", graph, "--prune", str(sparsity),
                    "-o", target], check=True)
    os.remove(tensors)
    return target


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(root, "bench-models"))
    ap.add_argument("--only", help="comma-separated subset of " + ",".join(MODELS))
    ap.add_argument("--cxrm", default=os.path.join(root, "target", "release", "cxrm"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    names = args.only.split(",") if args.only else list(MODELS)
    for name in names:
        if name not in MODELS:
            sys.exit(f"unknown model {name!r}; known: {', '.join(MODELS)}")
        path = build(name, args.out, args.cxrm)
        if name == "xception":
            print(f"xception, 30% of weights kept: {pruned(path, args.out, args.cxrm)}")


if __name__ == "__main__":
    main()
