"""Check crates/runtime/src/resize.rs byte for byte against the installed Pillow.

    python3 tools/check_resize.py [IMAGE_DIR ...]     (needs `pip install pillow` and rustc)
    python3 tools/check_resize.py --golden            (print the unit tests' golden vectors)

Compiles resize.rs on its own with `rustc -O` (it is std-only) behind a small driver, then
resizes with Pillow's `Image.resize(size, filter)` and with the driver:
* random L and RGB images of assorted sizes (shrinking, enlarging, odd ratios such as
  1000->150, 7->3, 3->7, 1->5, unchanged axes, same size), NEAREST, BILINEAR and BOX;
* every *.jpg/*.jpeg/*.png under each IMAGE_DIR, decoded by Pillow, as L and as RGB, to
  150x150 and 224x224 with each filter (only the resize is compared, not the decoding).
Prints one line per mismatch and `N matched, M differed (Pillow X)`; exits 1 on any difference.
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, __version__ as PIL_VERSION

RESIZE_RS = Path(__file__).resolve().parent.parent / "crates/runtime/src/resize.rs"
N_RANDOM = 150  # random shapes, besides the fixed list in random_cases
FILTERS = {"NEAREST": Image.NEAREST, "BILINEAR": Image.BILINEAR, "BOX": Image.BOX}

# Reads cases (six little-endian u32s: w, h, channels, dst_w, dst_h, Pillow filter code, then
# the pixels) from argv[1] and writes the concatenated outputs to argv[2]; argv[3] names the
# resize::PillowVersion to match (the BILINEAR/BOX pass order changed in 12.2 and in 13.0).
DRIVER = """
#[allow(dead_code)]
#[path = %s] mod resize;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&a[1]).unwrap();
    let pillow = match a[3].as_str() {
        "UpTo12_1" => resize::PillowVersion::UpTo12_1,
        "From12_2To12_3" => resize::PillowVersion::From12_2To12_3,
        _ => resize::PillowVersion::From13,
    };
    let (mut p, mut out) = (0, Vec::new());
    let u = |p: &mut usize| { *p += 4; u32::from_le_bytes(data[*p - 4..*p].try_into().unwrap()) as usize };
    while p < data.len() {
        let (w, h, c, dw, dh, f) = (u(&mut p), u(&mut p), u(&mut p), u(&mut p), u(&mut p), u(&mut p));
        let filter = resize::Filter::from_pillow_code(f as u8).unwrap();
        out.extend(resize::Resampler { filter, pillow }.resize(&data[p..p + w * h * c], w, h, c, dw, dh));
        p += w * h * c;
    }
    std::fs::write(&a[2], out).unwrap();
}
"""


def random_cases(rng: random.Random):
    sizes = [(1000, 150, 150, 1000), (1000, 1000, 150, 150), (7, 5, 3, 4), (7, 5, 11, 9),
             (7, 3, 3, 7), (3, 7, 7, 3), (1, 1, 5, 5), (1, 5, 5, 1), (150, 150, 150, 150),
             (150, 100, 150, 37), (100, 150, 37, 150), (640, 480, 224, 224), (2, 2, 3, 3),
             (300, 200, 299, 201), (10, 10, 1, 1), (1776, 1416, 224, 224), (33, 77, 77, 33),
             (600, 1100, 224, 224), (10, 300, 231, 6), (2, 355, 5, 7), (2, 216, 1, 214),
             (3, 1000, 10, 50), (1, 150, 4, 9)]  # the last rows: the pass-order rules
    for _ in range(N_RANDOM):
        sizes.append(tuple(rng.choice([rng.randint(1, 12), rng.randint(1, 400)]) for _ in range(4)))
    for w, h, dw, dh in sizes:
        for mode in ("L", "RGB"):
            data = rng.randbytes(w * h * len(mode))
            if rng.random() < 0.2:  # flat and saturated images exercise the rounding and clip
                data = bytes([rng.choice([0, 255])]) * len(data)
            yield f"random {mode} {w}x{h}", Image.frombytes(mode, (w, h), data), (dw, dh)


def image_cases(dirs):
    for d in dirs:
        for path in sorted(p for p in Path(d).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")):
            with Image.open(path) as im:
                for mode in ("L", "RGB"):
                    conv = im.convert(mode)
                    for size in ((150, 150), (224, 224)):
                        yield f"{path.name} {mode}", conv, size


def golden():
    im = Image.frombytes("L", (7, 5), bytes((x * 37 + y * 53) % 256 for y in range(5) for x in range(7)))
    print(f"// From Pillow {PIL_VERSION}: the 7x5 gradient resized with Image.resize(size, filter).")
    for name, code in FILTERS.items():
        for size in ((3, 4), (11, 9), (7, 2), (4, 5), (11, 2)):
            print(f"// {name} {size[0]}x{size[1]}\n{list(im.resize(size, code).tobytes())}")


def main(args):
    if args[:1] == ["--golden"]:
        return golden()
    rng = random.Random(20240611)
    cases = []
    for label, im, size in [*random_cases(rng), *image_cases(args)]:
        for name, code in FILTERS.items():
            cases.append((f"{label} -> {size[0]}x{size[1]} {name}", im, size, code))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "main.rs").write_text(DRIVER % json.dumps(str(RESIZE_RS)))
        subprocess.run(["rustc", "-O", "--edition", "2021", "-o", str(tmp / "driver"), str(tmp / "main.rs")],
                       check=True)
        with open(tmp / "cases", "wb") as f:
            for _, im, (dw, dh), code in cases:
                f.write(struct.pack("<6I", *im.size, len(im.mode), dw, dh, code) + im.tobytes())
        major, minor = map(int, PIL_VERSION.split(".")[:2])
        pillow = "From13" if major >= 13 else "From12_2To12_3" if (major, minor) >= (12, 2) else "UpTo12_1"
        subprocess.run([str(tmp / "driver"), str(tmp / "cases"), str(tmp / "out"), pillow], check=True)
        got = (tmp / "out").read_bytes()
    pos, bad = 0, 0
    for label, im, size, code in cases:
        want = im.resize(size, code).tobytes()
        if got[pos:pos + len(want)] != want:
            bad += 1
            diff = sum(a != b for a, b in zip(got[pos:pos + len(want)], want))
            print(f"DIFFER {label}: {diff} of {len(want)} bytes")
        pos += len(want)
    print(f"{len(cases) - bad} matched, {bad} differed (Pillow {PIL_VERSION})")
    return 1 if bad or pos != len(got) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
