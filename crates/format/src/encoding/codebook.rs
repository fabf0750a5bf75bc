//! `codebook` (spec §5.6): weight sharing by k-means. A tensor's values (or a sparse tensor's
//! surviving values) become indices into a small table of centroids; decoding is a lookup.
//!
//! One codebook per tensor, as Deep Compression uses: a per-output-channel codebook would
//! store `channels × 2^bits` centroids, which at 5 bits costs 128 bytes per channel in f32 and
//! outweighs what the indices save on the small layers of a compact CNN.

use super::stream::{self, Coding, Stream};
use crate::cursor::Cursor;
use crate::dtype::DType;
use crate::error::{Error, ErrorCode, Result};

pub const PARAMS_LEN: usize = 4;

/// How k-means picks its starting centroids (Han et al. compare the three; linear wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// Evenly spaced between the minimum and maximum value.
    Linear,
    /// At evenly spaced quantiles of the values (dense regions get more centroids).
    Density,
    /// Values drawn at random (seeded).
    Random(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub bits: u8,
    /// f32 or f16.
    pub centroid_dtype: DType,
    pub k: u16,
}

impl Params {
    pub fn to_bytes(self) -> Vec<u8> {
        let mut v = vec![self.bits, self.centroid_dtype.code()];
        v.extend_from_slice(&self.k.to_le_bytes());
        v
    }

    pub fn parse(params: &[u8], field: &str, offset: u64) -> Result<Params> {
        let bad = |detail: String| {
            Error::format(
                ErrorCode::BadChain,
                format!("{field}.params"),
                offset,
                detail,
            )
        };
        let [bits, dtype, k0, k1] = params.try_into().map_err(|_| {
            bad(format!(
                "codebook takes {PARAMS_LEN} parameter bytes, found {}",
                params.len()
            ))
        })?;
        let k = u16::from_le_bytes([k0, k1]);
        if !(1..=8).contains(&bits) {
            return Err(bad(format!("bits must be 1..=8, found {bits}")));
        }
        let centroid_dtype = match DType::from_code(dtype) {
            Some(d @ (DType::F32 | DType::F16)) => d,
            _ => {
                return Err(bad(format!(
                    "centroids are f32 (1) or f16 (2), found dtype code {dtype}"
                )));
            }
        };
        if k == 0 || k as u32 > 1 << bits {
            return Err(bad(format!("k must be 1..=2^{bits}, found {k}")));
        }
        Ok(Params {
            bits,
            centroid_dtype,
            k,
        })
    }
}

/// A trained codebook: sorted centroids and one index per value.
#[derive(Debug, Clone, PartialEq)]
pub struct Codebook {
    pub centroids: Vec<f32>,
    pub indices: Vec<u16>,
}

/// One-dimensional k-means (Lloyd's algorithm) over `values`, at most `2^bits` centroids.
/// Works on sorted values with prefix sums, so each iteration costs O(k log n), not O(n k).
/// Centroids are rounded to `centroid_dtype` before the final assignment, so decoding gives
/// exactly the values the encoder chose.
pub fn kmeans(values: &[f32], bits: u8, init: Init, centroid_dtype: DType) -> Codebook {
    let mut sorted: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f32::total_cmp);
    let distinct = {
        let mut d = sorted.clone();
        d.dedup();
        d
    };
    let k = (1usize << bits).min(distinct.len()).max(1);
    if sorted.is_empty() {
        return Codebook {
            centroids: vec![0.0],
            indices: vec![0; values.len()],
        };
    }
    let mut centroids: Vec<f64> = if distinct.len() <= k {
        distinct.iter().map(|&v| v as f64).collect()
    } else {
        let (lo, hi) = (sorted[0] as f64, sorted[sorted.len() - 1] as f64);
        let mut c: Vec<f64> = match init {
            Init::Linear => (0..k)
                .map(|i| {
                    if k == 1 {
                        (lo + hi) / 2.0
                    } else {
                        lo + (hi - lo) * i as f64 / (k - 1) as f64
                    }
                })
                .collect(),
            Init::Density => (0..k)
                .map(|i| {
                    sorted[((i as f64 + 0.5) / k as f64 * sorted.len() as f64) as usize] as f64
                })
                .collect(),
            Init::Random(seed) => {
                let mut rng = crate::lcg::Lcg(seed | 1);
                (0..k)
                    .map(|_| sorted[rng.next_u32() as usize % sorted.len()] as f64)
                    .collect()
            }
        };
        c.sort_by(f64::total_cmp);
        c
    };
    let mut prefix = Vec::with_capacity(sorted.len() + 1);
    prefix.push(0.0f64);
    for &v in &sorted {
        prefix.push(prefix.last().unwrap() + v as f64);
    }
    for _ in 0..300 {
        let bounds = boundaries(&centroids);
        let mut changed = false;
        let mut start = 0;
        for (j, c) in centroids.iter_mut().enumerate() {
            let end = if j < bounds.len() {
                sorted.partition_point(|&v| (v as f64) < bounds[j])
            } else {
                sorted.len()
            };
            if end > start {
                // An empty cluster keeps its centroid.
                let mean = (prefix[end] - prefix[start]) / (end - start) as f64;
                if mean != *c {
                    *c = mean;
                    changed = true;
                }
            }
            start = end.max(start);
        }
        if !changed {
            break;
        }
    }
    let round = |v: f64| -> f32 {
        match centroid_dtype {
            DType::F16 => half::f16::from_f64(v).to_f32(),
            _ => v as f32,
        }
    };
    let mut centroids: Vec<f32> = centroids.into_iter().map(round).collect();
    centroids.sort_by(f32::total_cmp);
    centroids.dedup();
    let indices = assign(values, &centroids);
    Codebook { centroids, indices }
}

fn boundaries(sorted_centroids: &[f64]) -> Vec<f64> {
    sorted_centroids
        .windows(2)
        .map(|w| (w[0] + w[1]) / 2.0)
        .collect()
}

/// Index of the nearest centroid for each value (centroids sorted ascending).
pub fn assign(values: &[f32], centroids: &[f32]) -> Vec<u16> {
    let bounds: Vec<f32> = centroids
        .windows(2)
        .map(|w| w[0] + (w[1] - w[0]) / 2.0)
        .collect();
    values
        .iter()
        .map(|&v| bounds.partition_point(|&b| b <= v) as u16)
        .collect()
}

/// Append the codebook payload (centroids, then the index stream) to `out`.
pub fn write_payload(cb: &Codebook, params: &Params, coding: Coding, out: &mut Vec<u8>) {
    for &c in &cb.centroids {
        match params.centroid_dtype {
            DType::F16 => out.extend_from_slice(&half::f16::from_f32(c).to_le_bytes()),
            _ => out.extend_from_slice(&c.to_le_bytes()),
        }
    }
    stream::write(&cb.indices, params.bits, coding, out);
}

/// Read a codebook payload of `count` values and decode them straight to `dtype` bytes (a float
/// type): one table lookup per value.
pub fn read_payload(
    c: &mut Cursor<'_>,
    params: &Params,
    count: u64,
    huffman: bool,
    what: &str,
    dtype: DType,
) -> Result<(Vec<u8>, Stream)> {
    let size = params.centroid_dtype.size();
    let table = c.bytes(params.k as usize * size, || format!("{what}.centroids"))?;
    let centroids: Vec<f32> = table
        .chunks_exact(size)
        .map(|b| {
            if size == 2 {
                half::f16::from_le_bytes([b[0], b[1]]).to_f32()
            } else {
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
        })
        .collect();
    // Each centroid already in the output dtype's bytes.
    let out_size = dtype.size();
    let entries: Vec<u8> = super::floats::f32_to_dtype(&centroids, dtype);
    let at = c.offset();
    let stream = stream::read(c, &format!("{what}.indices"), params.bits, count, huffman)?;
    if let Some(i) = stream.symbols.iter().position(|&idx| idx >= params.k) {
        return Err(Error::format(
            ErrorCode::DecodeError,
            format!("{what}.indices"),
            at,
            format!(
                "index {i} is {}, past the {} centroids",
                stream.symbols[i], params.k
            ),
        ));
    }
    Ok((lookup(&stream.symbols, &entries, out_size), stream))
}

/// `table` holds one `N`-byte entry per centroid; gather one entry per index. Fixed-size
/// copies compile to single loads and stores, which a runtime-sized copy per value does not.
fn gather<const N: usize>(indices: &[u16], table: &[u8]) -> Vec<u8> {
    let table: Vec<[u8; N]> = table
        .chunks_exact(N)
        .map(|c| c.try_into().expect("N bytes"))
        .collect();
    let mut out = vec![0u8; indices.len() * N];
    for (dst, &idx) in out.chunks_exact_mut(N).zip(indices) {
        dst.copy_from_slice(&table[idx as usize]);
    }
    out
}

fn lookup(indices: &[u16], table: &[u8], size: usize) -> Vec<u8> {
    match size {
        2 => gather::<2>(indices, table),
        4 => gather::<4>(indices, table),
        8 => gather::<8>(indices, table),
        other => unreachable!("float dtypes are 2, 4 or 8 bytes, not {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalish(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::lcg::Lcg(seed);
        (0..n)
            .map(|_| (0..4).map(|_| rng.centred()).sum::<f32>() * 0.1)
            .collect()
    }

    fn sse(values: &[f32], cb: &Codebook) -> f64 {
        values
            .iter()
            .zip(&cb.indices)
            .map(|(&v, &i)| ((v - cb.centroids[i as usize]) as f64).powi(2))
            .sum()
    }

    #[test]
    fn kmeans_assigns_to_nearest_and_beats_its_initialisation() {
        let values = normalish(5000, 3);
        for init in [Init::Linear, Init::Density, Init::Random(9)] {
            let cb = kmeans(&values, 4, init, DType::F32);
            assert!(cb.centroids.len() <= 16);
            for (&v, &i) in values.iter().zip(&cb.indices) {
                let d = (v - cb.centroids[i as usize]).abs();
                assert!(cb.centroids.iter().all(|&c| (v - c).abs() >= d - 1e-7));
            }
        }
        // Lloyd iterations reduce the error of the linear starting point.
        let cb = kmeans(&values, 3, Init::Linear, DType::F32);
        let (lo, hi) = values
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let linear: Vec<f32> = (0..8).map(|i| lo + (hi - lo) * i as f32 / 7.0).collect();
        let start = Codebook {
            indices: assign(&values, &linear),
            centroids: linear,
        };
        assert!(sse(&values, &cb) < sse(&values, &start));
    }

    #[test]
    fn few_distinct_values_are_exact_and_f16_centroids_decode_exactly() {
        let values = vec![0.5f32, -0.25, 0.5, 0.5, -0.25];
        let cb = kmeans(&values, 8, Init::Linear, DType::F32);
        assert_eq!(cb.centroids, vec![-0.25, 0.5]);
        let recon: Vec<f32> = cb
            .indices
            .iter()
            .map(|&i| cb.centroids[i as usize])
            .collect();
        assert_eq!(recon, values);
        let cb = kmeans(&normalish(100, 1), 5, Init::Linear, DType::F16);
        assert!(
            cb.centroids
                .iter()
                .all(|&c| half::f16::from_f32(c).to_f32() == c)
        );
    }

    #[test]
    fn payload_round_trips_and_rejects_indices_past_k() {
        let values = normalish(300, 5);
        let cb = kmeans(&values, 3, Init::Linear, DType::F32);
        let params = Params {
            bits: 3,
            centroid_dtype: DType::F32,
            k: cb.centroids.len() as u16,
        };
        let mut out = Vec::new();
        write_payload(&cb, &params, Coding::Packed, &mut out);
        let (decoded, _) = read_payload(
            &mut Cursor::new(&out, 0),
            &params,
            300,
            false,
            "t",
            DType::F32,
        )
        .unwrap();
        let expect: Vec<u8> = cb
            .indices
            .iter()
            .flat_map(|&i| cb.centroids[i as usize].to_le_bytes())
            .collect();
        assert_eq!(decoded, expect);
        let fewer = Params { k: 2, ..params };
        let mut out = Vec::new();
        out.extend_from_slice(&0f32.to_le_bytes());
        out.extend_from_slice(&1f32.to_le_bytes());
        stream::write(&[0, 1, 2], 3, Coding::Packed, &mut out);
        let err =
            read_payload(&mut Cursor::new(&out, 0), &fewer, 3, false, "t", DType::F32).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::DecodeError));
        assert!(Params::parse(&[9, 1, 1, 0], "f", 0).is_err());
        assert!(Params::parse(&[2, 1, 5, 0], "f", 0).is_err());
        assert!(Params::parse(&[2, 3, 1, 0], "f", 0).is_err());
    }
}
