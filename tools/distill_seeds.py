#!/usr/bin/env python3
"""Distillation over several seeds: the student trained alone and distilled from one teacher,
each seed a different shuffle, initialisation and validation split; prints each seed's test
errors and the share of the teacher-student gap that distillation closed, then their mean and
spread, and writes everything as JSON.

Usage (from the repository root, after `cargo build --release`):
  tools/distill_seeds.py TEACHER.cxrm --data mnist --student cnn-5-13-125 --seeds 1 2 3 \
      --epochs 20 --out distill-seeds/ [--temperature 4 --alpha 0.9 --shift 1]

Files already in --out are reused, so an interrupted run resumes. The student runs are the
study's: `cxrm train` alone, `cxrm compress --method distill` distilled, same epochs and shifts.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def test_errors(cxrm, model, data):
    out = subprocess.run([cxrm, "eval", model, "--data", data, "--json"], check=True,
                         capture_output=True, text=True).stdout
    doc = json.loads(out)
    return round((1 - doc["accuracy"]) * doc["n"]), doc["n"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("teacher")
    p.add_argument("--data", default="mnist")
    p.add_argument("--student", default="cnn-5-13-125")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--temperature", default="4")
    p.add_argument("--alpha", default="0.9")
    p.add_argument("--shift", default="1")
    p.add_argument("--out", default="distill-seeds")
    p.add_argument("--cxrm", default="target/release/cxrm")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    teacher_errors, n = test_errors(a.cxrm, a.teacher, a.data)
    rows = []
    for seed in a.seeds:
        alone = os.path.join(a.out, f"alone-s{seed}.cxrm")
        distilled = os.path.join(a.out, f"distilled-s{seed}.cxrm")
        common = ["--data", a.data, "--epochs", str(a.epochs), "--shift", a.shift,
                  "--seed", str(seed), "--quiet"]
        if not os.path.exists(alone):
            run([a.cxrm, "train", "--arch", a.student, *common, "-o", alone])
        if not os.path.exists(distilled):
            run([a.cxrm, "compress", a.teacher, "--method", "distill", "--student", a.student,
                 "--temperature", a.temperature, "--alpha", a.alpha, *common, "-o", distilled])
        e_alone, _ = test_errors(a.cxrm, alone, a.data)
        e_kd, _ = test_errors(a.cxrm, distilled, a.data)
        gap = e_alone - teacher_errors
        closed = (e_alone - e_kd) / gap if gap > 0 else float("nan")
        rows.append({"seed": seed, "alone_errors": e_alone, "distilled_errors": e_kd,
                     "gap_closed": closed})
        print(f"seed {seed}: alone {e_alone} errors, distilled {e_kd}, teacher {teacher_errors}:"
              f" {closed:.0%} of the gap closed", flush=True)
    closed = [r["gap_closed"] for r in rows]
    mean = statistics.fmean(closed)
    spread = statistics.stdev(closed) if len(closed) > 1 else 0.0
    print(f"gap closed over {len(rows)} seeds: mean {mean:.0%}, standard deviation {spread:.0%},"
          f" range {min(closed):.0%} to {max(closed):.0%}")
    doc = {"teacher": a.teacher, "teacher_errors": teacher_errors, "test_images": n,
           "student": a.student, "epochs": a.epochs, "temperature": float(a.temperature),
           "alpha": float(a.alpha), "shift": int(a.shift), "seeds": rows,
           "gap_closed_mean": mean, "gap_closed_stdev": spread}
    with open(os.path.join(a.out, "distill_seeds.json"), "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
