#!/usr/bin/env python3
"""Check `cxrm export` in onnxruntime: every exported model gives the outputs cxrm promises.

* Each runtime fixture (fixtures/runtime/NAME.cxrm: dense, Deep Compression, low-rank and
  Tucker factors, XNOR) is exported and run on the input its NAME.logits.json describes; the
  outputs must be within the spec's conformance tolerance, 1e-5 of the largest (§7).
* Each reference model of fixtures/import/ (ONNX and Keras, written by the frameworks) is
  imported, exported again and run on the 16 real radiographs with the file's own
  preprocessing; the exported graph must reproduce `cxrm run`'s outputs, and cxrm the
  framework's, to 1e-4 of the largest (the import fidelity bar of tests/import.rs).

Usage: python3 tools/check_export.py [--cxrm target/release/cxrm] [--data ../shared/data]
Needs: pip install onnx onnxruntime numpy (not needed by CI's Rust tests).
"""
import argparse, glob, json, os, subprocess, sys, tempfile
import numpy as np
import onnx
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cxrm_reader  # noqa: E402


def session(cxrm, model):
    data = subprocess.run([cxrm, "export", model, "-o", "-"], capture_output=True, check=True).stdout
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def relative(got, want):
    return float(np.max(np.abs(np.asarray(got) - np.asarray(want))) / max(1e-12, float(np.max(np.abs(want)))))


def runtime_fixtures(cxrm):
    worst = 0.0
    for model in sorted(glob.glob(os.path.join(ROOT, "fixtures", "runtime", "*.cxrm"))):
        doc = json.load(open(model[:-5] + ".logits.json"))
        meta = cxrm_reader.open_path(model).metadata()
        c, h, w = (int(v) for v in meta["input.shape"])
        if "pixels" in doc:
            px = [int(p) for p in doc["pixels"]]
        else:
            px = [(7 * y + 3 * x) % 256 for y in range(h) for x in range(w)]
        _, x = cxrm_reader.preprocess(meta, "L", w, h, px)
        got = session(cxrm, model).run(None, {"input": np.array(x, np.float32).reshape(1, c, h, w)})[0][0]
        err = relative(got, doc["logits"])
        worst = max(worst, err)
        print(f"{'PASS' if err <= 1e-5 else 'FAIL'} {os.path.basename(model)}: {err:.2e}")
    return worst <= 1e-5


def reference_models(cxrm, data):
    ok = True
    for exp_path in sorted(glob.glob(os.path.join(ROOT, "fixtures", "import", "*.expected.json"))):
        exp = json.load(open(exp_path))
        source = exp_path[: -len(".expected.json")]
        p = exp["preprocessing"]
        flags = ["--resize", p["resize"], "--classes", ",".join(exp["classes"])]
        if exp["framework"] == "keras":
            if p["scale"] != 1.0:
                flags += ["--scale", repr(p["scale"])]
        else:
            flags += ["--mean", ",".join(map(repr, p["mean"])), "--std", ",".join(map(repr, p["std"]))]
        with tempfile.TemporaryDirectory() as tmp:
            model = os.path.join(tmp, "m.cxrm")
            subprocess.run([cxrm, "import", source, "-o", model, *flags], capture_output=True, check=True)
            paths = [os.path.join(data, i["path"]) for i in exp["images"]]
            ran = json.loads(subprocess.run([cxrm, "run", model, "--json", *paths], capture_output=True,
                                            check=True).stdout)
            sess = session(cxrm, model)
            meta = cxrm_reader.open_path(model).metadata()
            c, h, w = (int(v) for v in meta["input.shape"])
            worst_cxrm = worst_framework = 0.0
            for image, got_cxrm, path in zip(exp["images"], ran, paths):
                key = "logits" if got_cxrm["logits"] is not None else "probabilities"
                want = image.get("logits", image.get("probabilities"))
                worst_framework = max(worst_framework, relative(got_cxrm[key], want))
            x = np.stack([np.asarray(pixels_of(cxrm, model, path, meta), np.float32).reshape(c, h, w)
                          for path in paths])
            out = sess.run(None, {"input": x})[0]
            for row, got_cxrm in zip(out, ran):
                key = "logits" if got_cxrm["logits"] is not None else "probabilities"
                worst_cxrm = max(worst_cxrm, relative(row, got_cxrm[key]))
            good = worst_cxrm <= 1e-4 and worst_framework <= 1e-4
            ok &= good
            print(f"{'PASS' if good else 'FAIL'} {os.path.basename(source)}: exported vs cxrm {worst_cxrm:.2e}, "
                  f"cxrm vs {exp['framework']} {worst_framework:.2e}")
    return ok


def pixels_of(cxrm, model, path, meta):
    """The model input cxrm makes of an image: decoded and resized by Pillow 13 (which cxrm
    matches bit for bit, tests/preprocess.rs), then the Python reader's §6.1 arithmetic."""
    from PIL import Image
    c, h, w = (int(v) for v in meta["input.shape"])
    filters = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "box": Image.BOX}
    img = Image.open(path).convert("L" if c == 1 else "RGB")
    img = img.resize((w, h), filters[meta.get("input.resize", "bilinear")])
    _, x = cxrm_reader.preprocess(meta, img.mode, w, h, list(img.tobytes()))
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxrm", default=os.path.join(ROOT, "target", "release", "cxrm"))
    ap.add_argument("--data", default=os.path.join(os.path.dirname(ROOT), "shared", "data"))
    args = ap.parse_args()
    print(f"# onnxruntime {ort.__version__}, onnx {onnx.__version__}")
    ok = runtime_fixtures(args.cxrm)
    ok &= reference_models(args.cxrm, args.data)
    print("all exports agree" if ok else "some exports disagree")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
