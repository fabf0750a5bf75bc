//! Low-rank decompositions of weight tensors (feature `factorize`, faer's SVD): the truncated
//! SVD of a layer's `rows × cols` matrix (Denton et al. 2014) and Tucker-2 of a convolution's
//! `[O, I, kh, kw]` kernel by higher-order SVD (Kim et al. 2016 initialise from it), with the
//! rank chosen by the share of the spectrum's energy it keeps. The results are the encodings'
//! own types ([`LowRank`], [`Tucker`]), ready for `lowrank::encode` / `tucker::encode` or for
//! fine-tuning as separate layers.

use cxrm_format::encoding::lowrank::LowRank;
use cxrm_format::encoding::tucker::Tucker;
use cxrm_format::error::{Error, Result};
use faer::Mat;

/// A thin SVD, singular values in decreasing order: `u` is `rows × k`, `v` is `cols × k`
/// (both row-major), `k = min(rows, cols)`.
pub struct Svd {
    pub rows: usize,
    pub cols: usize,
    pub u: Vec<f64>,
    pub s: Vec<f64>,
    pub v: Vec<f64>,
}

pub fn svd(values: &[f32], rows: usize, cols: usize) -> Result<Svd> {
    assert_eq!(values.len(), rows * cols, "values fill the matrix");
    let m = Mat::<f64>::from_fn(rows, cols, |i, j| values[i * cols + j] as f64);
    let d = m
        .thin_svd()
        .map_err(|e| Error::Model(format!("SVD of a {rows}x{cols} matrix failed: {e:?}")))?;
    let k = rows.min(cols);
    let (u, v, s) = (d.U(), d.V(), d.S().column_vector());
    Ok(Svd {
        rows,
        cols,
        u: (0..rows)
            .flat_map(|i| (0..k).map(move |j| u[(i, j)]))
            .collect(),
        s: (0..k).map(|j| s[j]).collect(),
        v: (0..cols)
            .flat_map(|i| (0..k).map(move |j| v[(i, j)]))
            .collect(),
    })
}

/// The smallest rank whose singular values keep at least `energy` (0..=1) of `Σ s²`, at
/// least 1.
pub fn rank_for_energy(s: &[f64], energy: f64) -> usize {
    let total: f64 = s.iter().map(|x| x * x).sum();
    let mut kept = 0.0;
    for (r, x) in s.iter().enumerate() {
        kept += x * x;
        if kept >= energy * total {
            return r + 1;
        }
    }
    s.len().max(1)
}

/// Whether rank `r` factors of a `rows × cols` matrix store fewer numbers than the matrix.
pub fn low_rank_saves(rows: usize, cols: usize, r: usize) -> bool {
    (rows + cols) * r < rows * cols
}

impl Svd {
    /// The best rank-`r` approximation as two factors, `√σ` folded into each side so that
    /// both have the same scale (f16 factors then lose the same precision on either side).
    pub fn truncate(&self, r: usize) -> LowRank {
        let k = self.s.len();
        let r = r.clamp(1, k);
        let root: Vec<f64> = self.s[..r].iter().map(|s| s.sqrt()).collect();
        let root = &root;
        let u = (0..self.rows)
            .flat_map(|i| (0..r).map(move |j| (self.u[i * k + j] * root[j]) as f32))
            .collect();
        let v = (0..r)
            .flat_map(|j| (0..self.cols).map(move |c| (self.v[c * k + j] * root[j]) as f32))
            .collect();
        LowRank {
            rows: self.rows,
            cols: self.cols,
            rank: r,
            u,
            v,
        }
    }
}

/// The first `r` left singular vectors of a `rows × cols` matrix, `rows × r` row-major, and
/// all its singular values.
fn leading_vectors(m: &[f32], rows: usize, cols: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let d = svd(m, rows, cols)?;
    Ok((d.u, d.s))
}

/// Singular values of a kernel's two channel unfoldings (`O × I·S` and `I × O·S`), from which
/// Tucker ranks are chosen.
pub fn tucker_spectra(w: &[f32], out: usize, inp: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let spatial = w.len() / (out * inp).max(1);
    let (_, s_out) = leading_vectors(w, out, inp * spatial)?;
    let (_, s_in) = leading_vectors(&mode1(w, out, inp, spatial), inp, out * spatial)?;
    Ok((s_out, s_in))
}

/// The mode-1 unfolding `W₍₁₎[i, (o, s)] = W[o, i, s]`.
fn mode1(w: &[f32], out: usize, inp: usize, spatial: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; w.len()];
    for o in 0..out {
        for i in 0..inp {
            for s in 0..spatial {
                m[(i * out + o) * spatial + s] = w[(o * inp + i) * spatial + s];
            }
        }
    }
    m
}

/// Tucker-2 of `w` (`[out, inp, s…]`, `spatial` = product of `s…`) by HOSVD: `U_out` and `U_in`
/// are the leading left singular vectors of the two channel unfoldings, and the core is `w`
/// projected onto them, `G = W ×₁ U_outᵀ ×₂ U_inᵀ`.
pub fn tucker2(
    w: &[f32],
    out: usize,
    inp: usize,
    rank_out: usize,
    rank_in: usize,
) -> Result<Tucker> {
    let spatial = w.len() / (out * inp).max(1);
    let (u_out_all, _) = leading_vectors(w, out, inp * spatial)?;
    let (u_in_all, _) = leading_vectors(&mode1(w, out, inp, spatial), inp, out * spatial)?;
    let (k_out, k_in) = (out.min(inp * spatial), inp.min(out * spatial));
    let (ro, ri) = (rank_out.clamp(1, k_out), rank_in.clamp(1, k_in));
    let (u_out_all, u_in_all) = (&u_out_all, &u_in_all);
    let u_out: Vec<f64> = (0..out)
        .flat_map(|o| (0..ro).map(move |a| u_out_all[o * k_out + a]))
        .collect();
    let u_in: Vec<f64> = (0..inp)
        .flat_map(|i| (0..ri).map(move |b| u_in_all[i * k_in + b]))
        .collect();
    // T[o, b, s] = Σ_i W[o, i, s] · U_in[i, b], then G[a, b, s] = Σ_o U_out[o, a] · T[o, b, s].
    let mut t = vec![0.0f64; out * ri * spatial];
    for o in 0..out {
        for i in 0..inp {
            for b in 0..ri {
                let uib = u_in[i * ri + b];
                for s in 0..spatial {
                    t[(o * ri + b) * spatial + s] += w[(o * inp + i) * spatial + s] as f64 * uib;
                }
            }
        }
    }
    let mut core = vec![0.0f64; ro * ri * spatial];
    for o in 0..out {
        for a in 0..ro {
            let uoa = u_out[o * ro + a];
            for (g, tv) in core[a * ri * spatial..(a + 1) * ri * spatial]
                .iter_mut()
                .zip(&t[o * ri * spatial..(o + 1) * ri * spatial])
            {
                *g += uoa * tv;
            }
        }
    }
    let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    Ok(Tucker {
        out,
        inp,
        spatial,
        rank_out: ro,
        rank_in: ri,
        u_out: f32s(u_out),
        core: f32s(core),
        u_in: f32s(u_in),
    })
}

/// Parameters of Tucker-2 factors against the full kernel's.
pub fn tucker_saves(out: usize, inp: usize, spatial: usize, ro: usize, ri: usize) -> bool {
    out * ro + ro * ri * spatial + inp * ri < out * inp * spatial
}

#[cfg(test)]
mod tests {
    use super::*;

    use cxrm_format::testing::uniform as rand;

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn full_rank_svd_rebuilds_the_matrix_and_truncation_is_optimal() {
        let (rows, cols) = (7, 12);
        let w = rand(rows * cols, 3);
        let d = svd(&w, rows, cols).unwrap();
        assert!(d.s.windows(2).all(|p| p[0] >= p[1]));
        assert!(max_err(&d.truncate(7).to_f32(), &w) < 1e-5);
        // Eckart–Young: the rank-r error (Frobenius²) is the sum of the dropped σ².
        let approx = d.truncate(3).to_f32();
        let err: f64 = approx
            .iter()
            .zip(&w)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let dropped: f64 = d.s[3..].iter().map(|s| s * s).sum();
        assert!(
            (err - dropped).abs() < 1e-4 * dropped.max(1e-9),
            "{err} vs {dropped}"
        );
    }

    #[test]
    fn rank_for_energy_counts_the_spectrum() {
        assert_eq!(rank_for_energy(&[3.0, 1.0, 1.0], 0.8), 1);
        assert_eq!(rank_for_energy(&[3.0, 1.0, 1.0], 0.95), 3);
        assert_eq!(rank_for_energy(&[3.0, 4.0_f64.sqrt(), 0.0], 0.99), 2);
    }

    #[test]
    fn tucker2_of_a_tucker_tensor_is_exact() {
        // A kernel built with ranks (2, 3) is recovered exactly at those ranks.
        let t = Tucker {
            out: 5,
            inp: 4,
            spatial: 9,
            rank_out: 2,
            rank_in: 3,
            u_out: rand(10, 1),
            core: rand(2 * 3 * 9, 2),
            u_in: rand(12, 3),
        };
        let w = t.to_f32();
        let back = tucker2(&w, 5, 4, 2, 3).unwrap();
        assert!(max_err(&back.to_f32(), &w) < 1e-5);
        let (s_out, s_in) = tucker_spectra(&w, 5, 4).unwrap();
        assert!(s_out[2] < 1e-5 && s_in[3] < 1e-5, "{s_out:?} {s_in:?}");
        assert!(tucker_saves(64, 32, 9, 16, 8));
        assert!(!tucker_saves(6, 1, 25, 6, 1));
    }
}
