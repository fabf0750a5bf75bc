"""Run the independent Python reader (cxrm_reader.py) over the conformance corpus.

    python3 tools/check_fixtures.py [fixtures_dir]     (default: the repo's fixtures/)

* every fixtures/valid/NAME.cxrm must open, verify, and match NAME.json exactly:
  version, metadata, graph, sections, and per tensor name, dtype, shape,
  encoding, stored_bytes and every decoded value: integer dtypes exactly as
  Python ints against JSON integers (so i64 values beyond 2^53 are exact),
  floating dtypes bit-for-bit as float64 (so -0.0 != 0.0); every proper prefix
  of the file must raise CxrmError (and nothing else);
* every fixtures/invalid/NAME.cxrm must fail with exactly the `error` code of
  fixtures/invalid/expected.json at the listed `stage` ("open": open_cxrm
  raises; "verify": open_cxrm succeeds and verify() raises).  The Rust
  reader's `field`/`offset` are compared too, but only reported (the spec says
  other readers need not match them, §10): each disagreement is noted on its
  fixture's line and counted in the summary, never as a failure;
* every case of fixtures/preprocess/cases.json (spec §6.1/§6.2: colour, Pillow's
  resize filters, crop, channel order, pixel arithmetic) must give exactly the
  listed 8-bit pixels and binary32 input bits.

Prints one line per fixture, then `# K field/offset disagreements with
expected.json (informational, not failures)` and a final `N passed, M
failed`; exits 1 on any failure.
"""

from __future__ import annotations

import json
import math
import re
import struct
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cxrm_reader import (  # noqa: E402
    CxrmError, ZSTD_BACKEND, hashed_negated, miracle_base, miracle_normal, open_cxrm,
    preprocess)

import numpy as np  # noqa: E402

NUMPY_DTYPE = {  # decoded numpy dtype per element type (bf16 widens to f32)
    "f32": np.float32, "f16": np.float16, "bf16": np.float32, "i8": np.int8,
    "u8": np.uint8, "i32": np.int32, "i64": np.int64, "f64": np.float64,
}
INTEGER_DTYPES = {"i8", "u8", "i32", "i64"}


def f64_bits(x) -> bytes:
    return struct.pack("<d", float(x))


def same(got, want, path: str, problems: list) -> None:
    """Strict structural equality: bool/int/float/str types must agree, floats
    bit-for-bit (so 0.0 vs -0.0 and int 1 vs float 1.0 vs true all differ)."""
    if isinstance(want, bool) or isinstance(got, bool):
        ok = isinstance(got, bool) and isinstance(want, bool) and got == want
    elif isinstance(want, int):
        ok = type(got) is int and got == want
    elif isinstance(want, float):
        ok = type(got) is float and (f64_bits(got) == f64_bits(want)
                                     or (math.isnan(got) and math.isnan(want)))
    elif isinstance(want, str) or want is None:
        ok = type(got) is type(want) and got == want
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            problems.append(f"{path}: got {got!r}, want {want!r}")
            return
        for i, (g, w) in enumerate(zip(got, want)):
            same(g, w, f"{path}[{i}]", problems)
        return
    elif isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            problems.append(f"{path}: keys {sorted(got) if isinstance(got, dict) else got!r}"
                            f", want {sorted(want)}")
            return
        for k in want:
            same(got[k], want[k], f"{path}.{k}", problems)
        return
    else:
        ok = False
    if not ok:
        problems.append(f"{path}: got {got!r}, want {want!r}")


def compare_values(arr: np.ndarray, want: list, integer: bool, path: str,
                   problems: list) -> None:
    """Decoded elements against the JSON `values` (§10: integers as JSON
    integers, floats as round-tripping JSON numbers, both exact).  Integer
    tensors compare as Python ints, never through float64 (which would merge
    2^53 + 1 with 2^53); floating tensors compare as float64 bit patterns."""
    # ndarray.tolist() yields Python ints for integer dtypes and Python floats
    # (the exact f64 widening) for f16/f32/f64.
    got = arr.reshape(-1).tolist()
    for i, (g, v) in enumerate(zip(got, want)):
        if integer:
            ok = type(v) is int and type(g) is int and g == v
        else:
            # A float value may be written without a fraction ("shortest
            # text"), so a JSON integer is accepted and widened, exactly.
            ok = (type(v) in (int, float) and type(g) is float
                  and (f64_bits(g) == f64_bits(v)
                       or (math.isnan(g) and math.isnan(float(v)))))
        if not ok:
            problems.append(f"{path}.values[{i}]: got {g!r}, want {v!r}")
            return


def check_valid(cxrm: Path, expected: dict) -> list:
    data = cxrm.read_bytes()
    problems: list = []
    f = open_cxrm(data)
    f.verify()
    same(list(f.version), expected["version"], "version", problems)
    same(f.metadata(), expected["metadata"], "metadata", problems)
    same(f.graph(), expected["graph"], "graph", problems)
    sections = [{"kind": s.kind, "required": s.required, "length": s.length}
                for s in f.sections]
    same(sections, expected["sections"], "sections", problems)

    want_tensors = expected["tensors"]
    if len(f.tensors) != len(want_tensors):
        problems.append(f"tensors: {len(f.tensors)} in file, {len(want_tensors)} expected")
    for t, w in zip(f.tensors, want_tensors):
        p = f"tensor {w['name']!r}"
        same(t.name, w["name"], f"{p}.name", problems)
        same(t.dtype, w["dtype"], f"{p}.dtype", problems)
        same(list(t.shape), w["shape"], f"{p}.shape", problems)
        same(t.encoding, w["encoding"], f"{p}.encoding", problems)
        same(t.stored_bytes, w["stored_bytes"], f"{p}.stored_bytes", problems)
        arr = f.decode(t.name)
        if arr.dtype != np.dtype(NUMPY_DTYPE[t.dtype]):
            problems.append(f"{p}: decoded dtype {arr.dtype}, want {NUMPY_DTYPE[t.dtype]}")
        if tuple(arr.shape) != tuple(w["shape"]):
            problems.append(f"{p}: decoded shape {arr.shape}, want {tuple(w['shape'])}")
        want = w["values"]
        if len(want) != arr.size:
            problems.append(f"{p}: {arr.size} values, want {len(want)}")
        else:
            compare_values(arr, want, t.dtype in INTEGER_DTYPES, p, problems)

    # Every proper prefix must be rejected with a CxrmError, nothing else.
    for n in range(len(data)):
        try:
            g = open_cxrm(data[:n])
            g.verify()
        except CxrmError:
            continue
        except Exception as e:  # noqa: BLE001 - the point is to catch anything
            problems.append(f"prefix of {n} bytes raised {type(e).__name__}: {e}")
            break
        problems.append(f"prefix of {n} bytes was accepted")
        break
    return problems


def check_invalid(cxrm: Path, exp: dict) -> tuple[list, str, bool]:
    """Returns (problems, note, agrees); note reports field/offset agreement
    with the Rust reader's, `agrees` whether both match."""
    data = cxrm.read_bytes()
    want_code, want_stage = exp["error"], exp["stage"]
    stage = "open"
    try:
        f = open_cxrm(data)
        stage = "verify"
        f.verify()
    except CxrmError as e:
        problems = []
        if e.code != want_code or stage != want_stage:
            problems.append(f"failed with {e.code} at {stage}, want {want_code} at "
                            f"{want_stage} ({e})")
        agree = (e.field == exp.get("field"), e.offset == exp.get("offset"))
        note = "field/offset agree" if all(agree) else (
            f"info: ours {e.field}@{e.offset}, Rust {exp.get('field')}@{exp.get('offset')}")
        return problems, note, all(agree)
    return ([f"accepted (opened and verified), want {want_code} at {want_stage}"], "",
            True)


def main(argv) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent.parent / "fixtures"
    passed = failed = 0
    disagreements = []          # invalid fixtures whose field/offset differ

    def report(ok: bool, label: str, detail: str) -> None:
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
        print(f"{'PASS' if ok else 'FAIL'} {label}{': ' + detail if detail else ''}")

    print(f"# zstd backend: {ZSTD_BACKEND}")
    valid = sorted((root / "valid").glob("*.cxrm"))
    for cxrm in valid:
        label = f"valid/{cxrm.stem}"
        jpath = cxrm.with_suffix(".json")
        if not jpath.exists():
            report(False, label, "no matching .json")
            continue
        try:
            problems = check_valid(cxrm, json.loads(jpath.read_text(encoding="utf-8")))
        except CxrmError as e:
            problems = [f"rejected: {e}"]
        except Exception as e:  # noqa: BLE001
            problems = [f"crashed: {type(e).__name__}: {e}\n{traceback.format_exc()}"]
        size = cxrm.stat().st_size
        report(not problems, label,
               "; ".join(problems[:5]) if problems else f"matches json, {size} truncations rejected")
    for jpath in sorted((root / "valid").glob("*.json")):
        if not jpath.with_suffix(".cxrm").exists():
            report(False, f"valid/{jpath.stem}", "json without a .cxrm")

    expected = json.loads((root / "invalid" / "expected.json").read_text(encoding="utf-8"))
    files = {p.stem: p for p in (root / "invalid").glob("*.cxrm")}
    for name in sorted(set(files) | set(expected)):
        label = f"invalid/{name}"
        if name not in files:
            report(False, label, "listed in expected.json but no .cxrm")
            continue
        if name not in expected:
            report(False, label, "not listed in expected.json")
            continue
        exp = expected[name]
        try:
            problems, note, agrees = check_invalid(files[name], exp)
        except Exception as e:  # noqa: BLE001
            problems, note, agrees = (
                [f"crashed: {type(e).__name__}: {e}\n{traceback.format_exc()}"], "", True)
        if not agrees:
            disagreements.append(name)
        report(not problems, label,
               "; ".join(problems) if problems else f"{exp['error']} at {exp['stage']} ({note})")

    cases_path = root / "preprocess" / "cases.json"
    cases = json.loads(cases_path.read_text(encoding="utf-8"))["cases"]
    for case in cases:
        src = case["source"]
        try:
            px, inputs = preprocess(case["metadata"], src["mode"], src["width"], src["height"],
                                    src["pixels"])
            bits = [format(struct.unpack("<I", struct.pack("<f", v))[0], "08x") for v in inputs]
            problems = []
            if px != case["pixels"]:
                diff = sum(a != b for a, b in zip(px, case["pixels"]))
                problems.append(f"{diff} of {len(px)} pixels differ")
            if bits != case["input_bits"]:
                diff = sum(a != b for a, b in zip(bits, case["input_bits"]))
                problems.append(f"{diff} of {len(bits)} inputs differ")
        except Exception as e:  # noqa: BLE001
            problems = [f"crashed: {type(e).__name__}: {e}\n{traceback.format_exc()}"]
        report(not problems, f"preprocess/{case['name']}",
               "; ".join(problems) if problems else f"{len(case['pixels'])} pixels, bit-exact")

    # §5.12's test vectors, read from the spec's table: the generator, bit for bit.
    spec = (root.parent / "spec" / "cxrm.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (\d+) \| `([0-9A-F]{16})` .*?\| `([0-9A-F]{16})` .*?"
                      r"\| `([0-9A-F]{16})` .*?\|$", spec, re.M)
    for block, index, *want in rows:
        base = miracle_base(0x0123456789ABCDEF, int(block), int(index))
        got = [format(struct.unpack("<Q", struct.pack("<d", miracle_normal(base, j)))[0], "016X")
               for j in range(3)]
        report(got == want, f"spec/miracle_vector block {block} index {index}",
               "bit-exact" if got == want else f"got {got}, the spec says {want}")
    if not rows:
        report(False, "spec/miracle_vectors", "no test vectors found in §5.12")
    # §5.13's sign vector: the hash, bit for bit.
    printed = re.search(r"the signs of elements 0 to 15 are `([+-]{16})`", spec)
    got = "".join("-" if hashed_negated(0x0123456789ABCDEF, e) else "+" for e in range(16))
    report(bool(printed) and printed.group(1) == got, "spec/hashed_signs",
           f"the hash gives {got}, the spec says {printed.group(1) if printed else 'nothing'}")

    print(f"# {len(disagreements)} field/offset disagreements with expected.json "
          f"(informational, not failures)"
          + (f": {', '.join(disagreements)}" if disagreements else ""))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
