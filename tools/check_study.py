#!/usr/bin/env python3
"""Check a `cxrm study` results.json: every row present and well formed, every file there,
and each file's accuracy reproduced by `cxrm eval --json` (the study reports what the file
gives). Usage: tools/check_study.py STUDY_DIR/results.json [CXRM_BINARY]"""
import json
import os
import subprocess
import sys

path = sys.argv[1]
cxrm = sys.argv[2] if len(sys.argv) > 2 else "target/release/cxrm"
doc = json.load(open(path))
folder = os.path.dirname(path)
rows = doc["rows"]
methods = {(r["model"], r["method"]) for r in rows}
for method in ("baseline", "deep-compression", "separable", "distill"):
    assert any(m == method for _, m in methods), f"no {method} row"
for model, method in methods:
    if method == "deep-compression":
        assert (model, "baseline") in methods, f"{model}: compressed but no baseline row"
        # Every network the study compresses is also factored; those with convolutions (the
        # ones with a separable twin) by Tucker-2 as well.
        assert (model, "lowrank") in methods, f"{model}: no lowrank row"
        if (model, "separable") in methods:
            assert (model, "tucker") in methods, f"{model}: no tucker row"
            assert (model, "xnor") in methods, f"{model}: no xnor row"
            assert (model, "bwn") in methods, f"{model}: no bwn row"
if doc["data"] == "bundled" or os.path.basename(doc["data"].rstrip("/")) == "mnist":
    # The networks the papers report on, so their ratios and ours compare.
    need = {("lenet-300-100", "baseline"), ("lenet-300-100", "deep-compression"),
            ("lenet-5", "baseline"), ("lenet-5", "deep-compression"), ("lenet-5", "separable"),
            ("lenet-5", "miracle"), ("lenet-5", "xnor"), ("lenet-5", "bwn")}
    missing = need - methods
    assert not missing, f"missing rows: {missing}"
failures = 0
for r in rows:
    for key in ("model", "method", "file", "params", "stored_bytes", "ratio", "accuracy"):
        assert key in r, f"{r.get('file')}: no {key}"
    f = os.path.join(folder, r["file"])
    assert os.path.getsize(f) == r["stored_bytes"], f"{f}: size differs from stored_bytes"
    out = subprocess.run([cxrm, "eval", f, "--data", doc["data"], "--json"],
                         check=True, capture_output=True, text=True).stdout
    acc = json.loads(out)["accuracy"]
    ok = abs(acc - r["accuracy"]) < 1e-12
    failures += not ok
    print(f"{'ok ' if ok else 'BAD'} {r['model']:<15} {r['method']:<17} {r['stored_bytes']:>9} B "
          f"{r['ratio']:6.1f}x  study {r['accuracy']:.4f}  eval {acc:.4f}")
    lo, hi = r["accuracy_ci95"]
    assert lo <= r["accuracy"] <= hi, f"{r['file']}: accuracy outside its interval"
    # A trained model on any of the ten-class sets is far above chance (10%).
    assert r["accuracy"] > 0.5, f"{r['file']}: accuracy {r['accuracy']}"
dc = {r["model"]: r for r in rows if r["method"] == "deep-compression"}
for model, r in dc.items():
    assert r["ratio"] > 20, f"{model}: deep compression only {r['ratio']:.1f}x"
sys.exit(1 if failures else 0)
