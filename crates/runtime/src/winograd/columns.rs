//! The one-dimensional transforms of F(4×4, 3×3), `Bᵀ d` and `Aᵀ m` on one column of a tile,
//! written once over a vector of tiles of either instruction set ([`Lanes`]): [`super::avx2`]
//! holds eight tiles a vector, [`super::avx512`] sixteen. Both give the same bits, the same
//! operations in the same order.

use super::{ALPHA, TILE};

/// The arithmetic the transforms take, on one instruction set's vectors.
///
/// # Safety
/// Every method needs the CPU to have the vectors' instruction set.
pub(super) trait Lanes: Copy {
    /// `v` in every lane.
    unsafe fn splat(v: f32) -> Self;
    unsafe fn add(self, other: Self) -> Self;
    unsafe fn sub(self, other: Self) -> Self;
    unsafe fn mul(self, other: Self) -> Self;
    /// `a·b + c`, fused.
    unsafe fn mul_add(a: Self, b: Self, c: Self) -> Self;
    /// `c − a·b`, fused.
    unsafe fn neg_mul_add(a: Self, b: Self, c: Self) -> Self;
}

/// `Bᵀ d` for one column of six values (each a vector of tiles).
///
/// # Safety
/// The CPU has `V`'s instruction set. (Inlined always, so that the instruction set's
/// operations are inlined into a caller compiled for it.)
#[inline(always)]
pub(super) unsafe fn input_1d<V: Lanes>(d: [V; ALPHA]) -> [V; ALPHA] {
    // SAFETY: the CPU has `V`'s instruction set (this function's contract).
    unsafe {
        let (two, four, five) = (V::splat(2.0), V::splat(4.0), V::splat(5.0));
        let t1 = V::neg_mul_add(four, d[2], d[4]); // d4 − 4·d2
        let t2 = V::neg_mul_add(four, d[1], d[3]); // d3 − 4·d1
        let t3 = d[4].sub(d[2]);
        let t4 = two.mul(d[3].sub(d[1]));
        [
            V::neg_mul_add(five, d[2], V::mul_add(four, d[0], d[4])),
            t1.add(t2),
            t1.sub(t2),
            t3.add(t4),
            t3.sub(t4),
            V::neg_mul_add(five, d[3], V::mul_add(four, d[1], d[5])),
        ]
    }
}

/// `Aᵀ m` for one column of six values.
///
/// # Safety
/// As for [`input_1d`].
#[inline(always)]
pub(super) unsafe fn output_1d<V: Lanes>(m: [V; ALPHA]) -> [V; TILE] {
    // SAFETY: the CPU has `V`'s instruction set (this function's contract).
    unsafe {
        let a = m[1].add(m[2]);
        let b = m[1].sub(m[2]);
        let c = m[3].add(m[4]);
        let d = m[3].sub(m[4]);
        [
            m[0].add(a).add(c),
            V::mul_add(V::splat(2.0), d, b),
            V::mul_add(V::splat(4.0), c, a),
            V::mul_add(V::splat(8.0), d, b).add(m[5]),
        ]
    }
}
