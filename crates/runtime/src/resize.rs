//! Resizing 8-bit image planes bit-for-bit as Pillow's `Image.resize(size, filter)` does, for
//! the NEAREST, BILINEAR and BOX filters.
//!
//! Models trained in Python usually saw their inputs through Pillow (Keras's `load_img` calls
//! `img.resize(size, resample)`, torchvision's `Resize` on PIL images likewise), and a
//! different resampler changes pixels by a few levels, enough to move a classifier's scores.
//! So this is a transcription of Pillow's C code (`src/_imaging.c` `_resize`,
//! `src/libImaging/Resample.c`, `src/libImaging/Geometry.c` `ImagingScaleAffine`), not a
//! resampler that merely looks alike: the same double-precision coefficients, the same
//! 22-bit fixed point, the same rounding and clipping between the two passes.
//! It was checked byte for byte against Pillow 10.4.0, 11.3.0, 12.0.0, 12.1.1, 12.2.0, 12.3.0
//! and 13.0.0 on x86_64 (`tools/check_resize.py`). Pillow 12.2 and again 13.0
//! changed the order of the two BILINEAR/BOX passes for some shapes, which moves some pixels
//! by one level; [`PillowVersion`] picks which releases to match (default: 10.0 to 12.1).
//!
//! Pillow resizes each channel of an `L`, `RGB` or `RGBX` image with the same coefficients and
//! independently of the others, so resizing interleaved RGB is exactly [`resize_plane`] per
//! channel. (Pillow premultiplies `LA`/`RGBA` by alpha before a non-NEAREST resize; that mode is
//! not covered here.)

/// A Pillow resampling filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    /// `Image.NEAREST` (`Resampling.NEAREST`, 0): each output pixel copies one source pixel.
    Nearest,
    /// `Image.BILINEAR` (`Resampling.BILINEAR`, 2): a triangle filter whose support grows with
    /// the reduction factor, so shrinking averages (antialiases) rather than samples.
    Bilinear,
    /// `Image.BOX` (`Resampling.BOX`, 4): area averaging; enlarging is nearest-neighbour-like.
    Box,
}

impl Filter {
    /// Pillow's integer code for the filter (`Image.Resampling`), as stored in metadata.
    pub fn pillow_code(self) -> u8 {
        match self {
            Filter::Nearest => 0,
            Filter::Bilinear => 2,
            Filter::Box => 4,
        }
    }

    /// The filter with Pillow's integer code, if it is one of the three supported.
    pub fn from_pillow_code(code: u8) -> Option<Filter> {
        match code {
            0 => Some(Filter::Nearest),
            2 => Some(Filter::Bilinear),
            4 => Some(Filter::Box),
            _ => None,
        }
    }
}

/// Which Pillow releases to match. They agree on NEAREST and on every coefficient; they differ
/// only in the order of the two BILINEAR/BOX passes, which shows (by one level, here and
/// there) because the intermediate image is rounded to u8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PillowVersion {
    /// Pillow 12.1.x and earlier (checked: 10.4.0, 11.3.0, 12.0.0, 12.1.1): always the
    /// horizontal pass first, then the vertical one.
    #[default]
    UpTo12_1,
    /// Pillow 12.2.x and 12.3.x (checked: 12.2.0, 12.3.0): `Image.resize` (in Python) runs the
    /// vertical pass first for tall sources that lose height: `h > 100 * w && dst_h < h`.
    From12_2To12_3,
    /// Pillow 13.0 and later (checked: 13.0.0): the C code runs the vertical pass first when
    /// the height loses more than twice as many pixels as the width: `h - dst_h > 0 &&
    /// h - dst_h > 2 * (w - dst_w)` (signed), e.g. 10x300 -> 231x6 or 600x1100 -> 224x224.
    From13,
}

/// A filter and the Pillow release whose output to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Resampler {
    /// The resampling filter.
    pub filter: Filter,
    /// Which Pillow releases' pass order to follow (matters for BILINEAR and BOX only).
    pub pillow: PillowVersion,
}

impl Resampler {
    /// The resampler a model's input metadata asks for (spec §6.2: `input.resize` and
    /// `input.resize_version`).
    pub fn for_input(spec: &cxrm_format::container::input_spec::InputSpec) -> Resampler {
        use cxrm_format::container::input_spec::{PassOrder, ResizeFilter};
        let filter = match spec.resize {
            ResizeFilter::Nearest => Filter::Nearest,
            ResizeFilter::Bilinear => Filter::Bilinear,
            ResizeFilter::Box => Filter::Box,
        };
        let pillow = match spec.pass_order {
            PassOrder::Pillow10 => PillowVersion::UpTo12_1,
            PassOrder::Pillow12_2 => PillowVersion::From12_2To12_3,
            PassOrder::Pillow13 => PillowVersion::From13,
        };
        Resampler { filter, pillow }
    }

    /// `filter` as Pillow 10.0 to 12.1 apply it.
    pub fn new(filter: Filter) -> Resampler {
        Resampler {
            filter,
            pillow: PillowVersion::UpTo12_1,
        }
    }

    /// Resize an interleaved 8-bit image of `channels` channels (e.g. RGB as `[r, g, b, r,
    /// ...]`, or one plane with `channels == 1`), exactly as Pillow's
    /// `Image.resize((dst_w, dst_h), filter)` resizes an `L` or `RGB` image: every channel
    /// with the same coefficients, each on its own.
    ///
    /// The same size returns a copy, as Pillow does (`Image.resize` returns `self.copy()`).
    /// An empty destination gives an empty vector (Pillow refuses it; callers check sizes
    /// first).
    ///
    /// # Panics
    /// If `channels == 0` or `src.len() != src_w * src_h * channels`.
    pub fn resize(
        &self,
        src: &[u8],
        src_w: usize,
        src_h: usize,
        channels: usize,
        dst_w: usize,
        dst_h: usize,
    ) -> Vec<u8> {
        assert!(channels > 0, "an image has at least one channel");
        assert_eq!(
            src.len(),
            src_w * src_h * channels,
            "source is not {src_w}x{src_h}x{channels} bytes"
        );
        if dst_w == 0 || dst_h == 0 {
            return Vec::new();
        }
        if (dst_w, dst_h) == (src_w, src_h) {
            return src.to_vec();
        }
        let img = Image {
            data: src,
            w: src_w,
            h: src_h,
            c: channels,
        };
        match self.filter {
            Filter::Nearest => nearest(img, dst_w, dst_h),
            Filter::Bilinear => resample(img, dst_w, dst_h, Kernel::Bilinear, self.pillow),
            Filter::Box => resample(img, dst_w, dst_h, Kernel::Box, self.pillow),
        }
    }
}

/// Resize one 8-bit plane (`src_w * src_h` bytes, row-major) to `dst_w * dst_h` bytes, exactly
/// as Pillow 10.0 to 12.1 `Image.resize((dst_w, dst_h), filter)` an `L` image; see
/// [`Resampler::resize`].
pub fn resize_plane(
    src: &[u8],
    src_w: usize,
    src_h: usize,
    dst_w: usize,
    dst_h: usize,
    filter: Filter,
) -> Vec<u8> {
    Resampler::new(filter).resize(src, src_w, src_h, 1, dst_w, dst_h)
}

/// Resize an interleaved image (e.g. RGB) as Pillow 10.0 to 12.1 do; see [`Resampler::resize`].
pub fn resize_interleaved(
    src: &[u8],
    src_w: usize,
    src_h: usize,
    channels: usize,
    dst_w: usize,
    dst_h: usize,
    filter: Filter,
) -> Vec<u8> {
    Resampler::new(filter).resize(src, src_w, src_h, channels, dst_w, dst_h)
}

#[derive(Clone, Copy)]
struct Image<'a> {
    data: &'a [u8],
    w: usize,
    h: usize,
    c: usize,
}

/// For each output coordinate, the source coordinate NEAREST takes, or `None` where Pillow
/// leaves the fill value 0.
///
/// `ImagingScaleAffine` walks the source in doubles: it starts at `scale * 0.5` and *adds*
/// `scale` once per output pixel, truncating each position. The repeated addition is what
/// decides exact ties, so it is done the same way here rather than as `(i + 0.5) * scale`: for
/// 2 -> 7, output 3 sits exactly on source position 1.0, but the sum lands just below it and
/// Pillow takes pixel 0. About a fifth of the size pairs up to 400x400 hit such a case
/// somewhere.
fn nearest_positions(src: usize, dst: usize) -> Vec<Option<usize>> {
    // `_resize` takes the box as C floats: the source size goes through f32 before the
    // division in double.
    let scale = (src as f32) as f64 / dst as f64;
    let mut pos = scale * 0.5;
    (0..dst)
        .map(|_| {
            // Pillow's COORD(): negative -> -1, otherwise truncate.
            let i = if pos < 0.0 { None } else { Some(pos as usize) };
            pos += scale;
            i.filter(|&i| i < src)
        })
        .collect()
}

fn nearest(img: Image, dst_w: usize, dst_h: usize) -> Vec<u8> {
    let xs = nearest_positions(img.w, dst_w);
    let ys = nearest_positions(img.h, dst_h);
    let c = img.c;
    let mut out = vec![0u8; dst_w * dst_h * c];
    for (row, y) in out.chunks_exact_mut(dst_w * c).zip(ys) {
        let Some(y) = y else { continue };
        let src_row = &img.data[y * img.w * c..(y + 1) * img.w * c];
        for (px, x) in row.chunks_exact_mut(c).zip(&xs) {
            if let Some(x) = *x {
                px.copy_from_slice(&src_row[x * c..(x + 1) * c]);
            }
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Kernel {
    Bilinear,
    Box,
}

impl Kernel {
    /// Half-width of the filter at scale 1 (`struct filter`'s `support`).
    fn support(self) -> f64 {
        match self {
            Kernel::Bilinear => 1.0,
            Kernel::Box => 0.5,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Kernel::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            // Half-open, so a source pixel exactly on the edge between two outputs' boxes
            // counts for the left one only.
            Kernel::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// Pillow's `PRECISION_BITS` for 8-bit images: 32 - 8 - 2, leaving room for the sum of
/// 8-bit values times coefficients (and the negative lobes of other filters) in an `i32`.
const PRECISION_BITS: u32 = 22;

/// One axis's filter: for output `i`, the source run `start[i] .. start[i] + len[i]` and its
/// fixed-point weights `weights[i * ksize ..][.. len[i]]`.
struct Coeffs {
    start: Vec<usize>,
    len: Vec<usize>,
    ksize: usize,
    weights: Vec<i32>,
}

/// `precompute_coeffs` followed by `normalize_coeffs_8bpc`, operation for operation: the double
/// arithmetic decides which sources a pixel reaches and the rounding of each weight, and both
/// show in the output.
fn coeffs(in_size: usize, out_size: usize, kernel: Kernel) -> Coeffs {
    // Box (0, in_size) as C floats, as `_resize` passes it.
    let scale = (in_size as f32) as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = kernel.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for (xx, kk) in weights.chunks_exact_mut(ksize).enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) cast truncates towards zero; anything below 0 is clamped anyway.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = (xmax - xmin).max(0) as usize;
        let mut ww = 0.0;
        for (x, kx) in k[..n].iter_mut().enumerate() {
            // Same association as C: ((x + xmin) - center) + 0.5, then * ss.
            let w = kernel.weight(((x as i64 + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (kx, out) in k[..n].iter().zip(kk.iter_mut()) {
            let v = if ww != 0.0 { kx / ww } else { *kx };
            // Round half away from zero, then truncate, as normalize_coeffs_8bpc does.
            let scaled = v * (1u32 << PRECISION_BITS) as f64;
            *out = if v < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        start.push(xmin as usize);
        len.push(n);
    }
    Coeffs {
        start,
        len,
        ksize,
        weights,
    }
}

/// Pillow's `clip8`: drop the fraction (an arithmetic shift, so floor), clamp to 0..=255.
/// The accumulator starts at one half, which makes the shift round to nearest.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// One horizontal pass over source rows `rows` (a range, since with horizontal-first Pillow
/// only filters the rows the vertical pass will read); each value rounded and clipped to u8.
fn horizontal_pass(
    data: &[u8],
    w: usize,
    c: usize,
    rows: std::ops::Range<usize>,
    k: &Coeffs,
) -> Vec<u8> {
    let dst_w = k.start.len();
    let mut out = vec![0u8; rows.len() * dst_w * c];
    for (y, out_row) in rows.zip(out.chunks_exact_mut(dst_w * c)) {
        let in_row = &data[y * w * c..(y + 1) * w * c];
        for (xx, out_px) in out_row.chunks_exact_mut(c).enumerate() {
            let kx = &k.weights[xx * k.ksize..][..k.len[xx]];
            let xmin = k.start[xx];
            for (ch, o) in out_px.iter_mut().enumerate() {
                let mut acc = HALF;
                for (x, &kv) in kx.iter().enumerate() {
                    acc += in_row[(xmin + x) * c + ch] as i32 * kv;
                }
                *o = clip8(acc);
            }
        }
    }
    out
}

/// One vertical pass; `data`'s first row is source row `first_row`.
fn vertical_pass(data: &[u8], w: usize, c: usize, first_row: usize, k: &Coeffs) -> Vec<u8> {
    let stride = w * c;
    let mut out = vec![0u8; k.start.len() * stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let ky = &k.weights[yy * k.ksize..][..k.len[yy]];
        let ymin = k.start[yy] - first_row;
        for (i, o) in out_row.iter_mut().enumerate() {
            let mut acc = HALF;
            for (y, &kv) in ky.iter().enumerate() {
                acc += data[(ymin + y) * stride + i] as i32 * kv;
            }
            *o = clip8(acc);
        }
    }
    out
}

/// `ImagingResampleInner`: two separable passes, each rounding and clipping to u8, so their
/// order shows in the output. An axis whose size is unchanged is skipped (its coefficients
/// would be the identity anyway).
fn resample(
    img: Image,
    dst_w: usize,
    dst_h: usize,
    kernel: Kernel,
    version: PillowVersion,
) -> Vec<u8> {
    let (w, h, c) = (img.w, img.h, img.c);
    let need_horizontal = dst_w != w;
    let need_vertical = dst_h != h;
    let vertical_first = match version {
        PillowVersion::UpTo12_1 => false,
        // Python ints in `Image.resize`, so no overflow there either.
        PillowVersion::From12_2To12_3 => h > w.saturating_mul(100) && dst_h < h,
        // C ints in `ImagingResampleInner`; a wider output counts as a negative loss.
        PillowVersion::From13 => {
            let shrink_h = h as i64 - dst_h as i64;
            let shrink_w = w as i64 - dst_w as i64;
            shrink_h > 0 && shrink_h > 2 * shrink_w
        }
    };

    if vertical_first {
        let tmp = vertical_pass(img.data, w, c, 0, &coeffs(h, dst_h, kernel));
        if !need_horizontal {
            return tmp;
        }
        return horizontal_pass(&tmp, w, c, 0..dst_h, &coeffs(w, dst_w, kernel));
    }
    if !need_vertical {
        return horizontal_pass(img.data, w, c, 0..h, &coeffs(w, dst_w, kernel));
    }
    let vert = coeffs(h, dst_h, kernel);
    if !need_horizontal {
        return vertical_pass(img.data, w, c, 0, &vert);
    }
    let first = vert.start[0];
    let last = vert.start[dst_h - 1] + vert.len[dst_h - 1];
    let tmp = horizontal_pass(img.data, w, c, first..last, &coeffs(w, dst_w, kernel));
    vertical_pass(&tmp, dst_w, c, first, &vert)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 7x5 plane the golden vectors below were made from: `(x * 37 + y * 53) % 256`, i.e.
    /// `Image.frombytes("L", (7, 5), bytes((x * 37 + y * 53) % 256 for y in range(5) for x in
    /// range(7)))`.
    fn gradient() -> Vec<u8> {
        (0..5)
            .flat_map(|y| (0..7).map(move |x| ((x * 37 + y * 53) % 256) as u8))
            .collect()
    }

    fn check(filter: Filter, (w, h): (usize, usize), want: &[u8]) {
        let got = resize_plane(&gradient(), 7, 5, w, h, filter);
        assert_eq!(got, want, "{filter:?} 7x5 -> {w}x{h}");
    }

    // Golden outputs from Pillow 11.3.0 (`tools/check_resize.py --golden`); every release
    // checked, 10.4.0 to 13.0.0, gives the same bytes for these.
    #[test]
    fn nearest_matches_pillow() {
        check(
            Filter::Nearest,
            (3, 4),
            &[37, 111, 185, 90, 164, 238, 196, 14, 88, 249, 67, 141],
        );
        check(
            Filter::Nearest,
            (11, 9),
            &[
                0, 0, 37, 74, 74, 111, 148, 148, 185, 222, 222, 0, 0, 37, 74, 74, 111, 148, 148,
                185, 222, 222, 53, 53, 90, 127, 127, 164, 201, 201, 238, 19, 19, 53, 53, 90, 127,
                127, 164, 201, 201, 238, 19, 19, 106, 106, 143, 180, 180, 217, 254, 254, 35, 72,
                72, 159, 159, 196, 233, 233, 14, 51, 51, 88, 125, 125, 159, 159, 196, 233, 233, 14,
                51, 51, 88, 125, 125, 212, 212, 249, 30, 30, 67, 104, 104, 141, 178, 178, 212, 212,
                249, 30, 30, 67, 104, 104, 141, 178, 178,
            ],
        );
        check(
            Filter::Nearest,
            (4, 5),
            &[
                0, 74, 148, 222, 53, 127, 201, 19, 106, 180, 254, 72, 159, 233, 51, 125, 212, 30,
                104, 178,
            ],
        );
    }

    #[test]
    fn bilinear_matches_pillow() {
        check(
            Filter::Bilinear,
            (3, 4),
            &[45, 124, 181, 107, 180, 128, 169, 136, 94, 190, 84, 133],
        );
        check(
            Filter::Bilinear,
            (11, 9),
            &[
                0, 17, 40, 64, 87, 111, 135, 158, 182, 205, 222, 18, 35, 58, 82, 105, 129, 153,
                176, 200, 176, 154, 47, 64, 87, 111, 134, 158, 182, 205, 229, 129, 42, 77, 94, 117,
                141, 164, 188, 212, 203, 155, 91, 43, 106, 123, 146, 170, 193, 217, 241, 194, 55,
                55, 72, 135, 152, 175, 199, 171, 104, 128, 120, 72, 84, 101, 165, 182, 202, 208,
                141, 20, 44, 67, 91, 114, 131, 194, 211, 219, 134, 80, 49, 73, 96, 120, 143, 160,
                212, 229, 229, 90, 43, 67, 91, 114, 138, 161, 178,
            ],
        );
        // Only one axis changes: the other pass is skipped.
        check(
            Filter::Bilinear,
            (7, 2),
            &[
                53, 90, 127, 152, 189, 168, 100, 159, 196, 152, 84, 121, 100, 125,
            ],
        );
        check(
            Filter::Bilinear,
            (4, 5),
            &[
                19, 77, 145, 203, 72, 130, 198, 122, 125, 183, 200, 65, 178, 164, 48, 106, 219, 84,
                101, 159,
            ],
        );
    }

    #[test]
    fn box_matches_pillow() {
        check(
            Filter::Box,
            (3, 4),
            &[19, 111, 204, 99, 191, 92, 178, 99, 107, 231, 67, 160],
        );
        // Enlarging by less than 2x, BOX reaches one source pixel per output, like NEAREST.
        check(
            Filter::Box,
            (11, 9),
            &resize_plane(&gradient(), 7, 5, 11, 9, Filter::Nearest),
        );
        check(
            Filter::Box,
            (7, 2),
            &[
                53, 90, 127, 164, 201, 153, 104, 186, 223, 132, 41, 78, 115, 152,
            ],
        );
        check(
            Filter::Box,
            (4, 5),
            &[
                19, 93, 148, 204, 72, 146, 201, 129, 125, 199, 254, 54, 178, 124, 51, 107, 231, 49,
                104, 160,
            ],
        );
    }

    const ALL_VERSIONS: [PillowVersion; 3] = [
        PillowVersion::UpTo12_1,
        PillowVersion::From12_2To12_3,
        PillowVersion::From13,
    ];

    fn bilinear(pillow: PillowVersion) -> Resampler {
        Resampler {
            filter: Filter::Bilinear,
            pillow,
        }
    }

    #[test]
    fn pass_order_follows_pillow_version() {
        // 5 -> 2 rows loses 3, 7 -> 11 columns gains 4: Pillow 13 filters rows first, and the
        // rounding of the intermediate image moves one pixel by one level (Pillow 12.0.0,
        // 12.3.0 and 13.0.0 outputs).
        let before = [
            53, 70, 93, 117, 136, 152, 176, 183, 170, 131, 100, 159, 176, 192, 164, 127, 84, 108,
            115, 102, 113, 125,
        ];
        let mut from13 = before;
        from13[20] = 114;
        let r = |pillow| bilinear(pillow).resize(&gradient(), 7, 5, 1, 11, 2);
        assert_eq!(r(PillowVersion::UpTo12_1), before);
        assert_eq!(r(PillowVersion::From12_2To12_3), before);
        assert_eq!(r(PillowVersion::From13), from13);

        // A source taller than 100 times its width: Pillow 12.2 filters rows first too
        // (Pillow 12.1.1 gives 128, 12.2.0 and 13.0.0 give 127).
        let tall: Vec<u8> = (0..216usize)
            .flat_map(|y| (0..2usize).map(move |x| ((x * 37 + y * 53) % 256) as u8))
            .collect();
        let r = |pillow| bilinear(pillow).resize(&tall, 2, 216, 1, 1, 1);
        assert_eq!(r(PillowVersion::UpTo12_1), [128]);
        assert_eq!(r(PillowVersion::From12_2To12_3), [127]);
        assert_eq!(r(PillowVersion::From13), [127]);
        // Pillow 12.2 does it as two calls, rows then columns; 13 keeps 2x216 -> 1x214 in the
        // old order (2 rows lost is not more than twice 1 column lost).
        let rows_first = resize_plane(
            &resize_plane(&tall, 2, 216, 2, 214, Filter::Bilinear),
            2,
            214,
            1,
            214,
            Filter::Bilinear,
        );
        let r = |pillow| bilinear(pillow).resize(&tall, 2, 216, 1, 1, 214);
        assert_eq!(r(PillowVersion::From12_2To12_3), rows_first);
        assert_eq!(r(PillowVersion::From13), r(PillowVersion::UpTo12_1));

        // Otherwise the versions agree.
        for (w, h) in [(3, 4), (11, 9), (7, 2), (4, 5)] {
            let r = |pillow| bilinear(pillow).resize(&gradient(), 7, 5, 1, w, h);
            for pillow in ALL_VERSIONS {
                assert_eq!(r(pillow), r(PillowVersion::UpTo12_1), "{w}x{h} {pillow:?}");
            }
        }
    }

    #[test]
    fn nearest_walks_by_repeated_addition() {
        // 2 -> 7: output 3's exact source position is 3.5 * 2 / 7 = 1.0, but Pillow adds 2/7
        // three times to 1/7 and lands just below 1.0, so it takes pixel 0 (Pillow 11.3.0).
        let got = resize_plane(&[10, 20, 30, 40], 2, 2, 7, 7, Filter::Nearest);
        let row0 = [10, 10, 10, 10, 20, 20, 20];
        let row1 = [30, 30, 30, 30, 40, 40, 40];
        let want: Vec<u8> = [row0; 4]
            .iter()
            .chain(&[row1; 3])
            .flatten()
            .copied()
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn same_size_is_identity() {
        let src = gradient();
        for filter in [Filter::Nearest, Filter::Bilinear, Filter::Box] {
            assert_eq!(resize_plane(&src, 7, 5, 7, 5, filter), src);
            for pillow in ALL_VERSIONS {
                let r = Resampler { filter, pillow };
                assert_eq!(r.resize(&src, 1, 35, 1, 1, 35), src);
            }
        }
    }

    #[test]
    fn single_pixels() {
        for filter in [Filter::Nearest, Filter::Bilinear, Filter::Box] {
            assert_eq!(resize_plane(&[77], 1, 1, 5, 1, filter), [77; 5]);
            assert_eq!(resize_plane(&[77], 1, 1, 3, 2, filter), [77; 6]);
        }
        // Pillow 11.3.0: a 5x1 row [0, 50, 100, 150, 250] to 1x1 and to 1x3.
        let row = [0, 50, 100, 150, 250];
        for (filter, v) in [
            (Filter::Nearest, 100),
            (Filter::Bilinear, 108),
            (Filter::Box, 110),
        ] {
            assert_eq!(resize_plane(&row, 5, 1, 1, 1, filter), [v]);
            assert_eq!(resize_plane(&row, 5, 1, 1, 3, filter), [v; 3]);
        }
    }

    #[test]
    fn interleaved_channels_are_independent_planes() {
        let planes: Vec<Vec<u8>> = (0..3u8)
            .map(|c| {
                gradient()
                    .iter()
                    .map(|v| v.wrapping_mul(c + 1).wrapping_add(c))
                    .collect()
            })
            .collect();
        let rgb: Vec<u8> = (0..35)
            .flat_map(|i| planes.iter().map(move |p| p[i]))
            .collect();
        for filter in [Filter::Nearest, Filter::Bilinear, Filter::Box] {
            for (w, h) in [(3, 4), (11, 9), (2, 13)] {
                let got = resize_interleaved(&rgb, 7, 5, 3, w, h, filter);
                for (c, plane) in planes.iter().enumerate() {
                    let want = resize_plane(plane, 7, 5, w, h, filter);
                    let got_c: Vec<u8> = got.iter().skip(c).step_by(3).copied().collect();
                    assert_eq!(got_c, want, "{filter:?} {w}x{h} channel {c}");
                }
            }
        }
    }

    #[test]
    fn empty_destination_and_filter_codes() {
        assert!(resize_plane(&gradient(), 7, 5, 0, 3, Filter::Bilinear).is_empty());
        for filter in [Filter::Nearest, Filter::Bilinear, Filter::Box] {
            assert_eq!(Filter::from_pillow_code(filter.pillow_code()), Some(filter));
        }
        assert_eq!(
            Filter::from_pillow_code(3),
            None,
            "BICUBIC is not supported"
        );
    }

    #[test]
    #[should_panic(expected = "source is not 7x4x1 bytes")]
    fn wrong_source_length_panics() {
        resize_plane(&gradient(), 7, 4, 3, 3, Filter::Box);
    }
}
