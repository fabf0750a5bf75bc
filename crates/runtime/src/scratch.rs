//! Buffers that kernels need only while they run (im2col tiles, zero-padded planes, the
//! intermediates of a product of factors), kept per thread and reused across layers and
//! passes: once each has grown to the largest size a model asks of it, a forward pass
//! allocates nothing for them.
//!
//! A buffer is taken out of the thread's pool and given back after use, rather than borrowed
//! in place: a thread waiting inside `rayon::join` may steal another part of the same pass
//! (or another image of the batch) that asks for scratch of its own, and it then gets a
//! different buffer instead of a double borrow.

use std::cell::RefCell;
use std::thread::LocalKey;

/// Element types that have a per-thread pool of buffers.
pub trait Pooled: Sized + 'static {
    fn pool() -> &'static LocalKey<RefCell<Vec<Vec<Self>>>>;
}

thread_local! {
    static F32: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
    static SPANS: RefCell<Vec<Vec<(usize, usize)>>> = const { RefCell::new(Vec::new()) };
    static OFFSETS: RefCell<Vec<Vec<usize>>> = const { RefCell::new(Vec::new()) };
    /// The binary layers' words of signs, and their counts of differing bits.
    static WORDS: RefCell<Vec<Vec<u64>>> = const { RefCell::new(Vec::new()) };
    static COUNTS: RefCell<Vec<Vec<u32>>> = const { RefCell::new(Vec::new()) };
    /// [`with_len`]'s own buffers, which keep their lengths: in the shared pool a kernel's
    /// [`take`] emptied one now and then (a depthwise layer's padded plane), and the next
    /// product zero-filled its 1 MiB of panels back (2.3% of MobileNetV2's pass, in `memset`).
    static KEPT: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

impl Pooled for f32 {
    fn pool() -> &'static LocalKey<RefCell<Vec<Vec<f32>>>> {
        &F32
    }
}

impl Pooled for usize {
    fn pool() -> &'static LocalKey<RefCell<Vec<Vec<usize>>>> {
        &OFFSETS
    }
}

impl Pooled for u64 {
    fn pool() -> &'static LocalKey<RefCell<Vec<Vec<u64>>>> {
        &WORDS
    }
}

impl Pooled for u32 {
    fn pool() -> &'static LocalKey<RefCell<Vec<Vec<u32>>>> {
        &COUNTS
    }
}

impl Pooled for (usize, usize) {
    fn pool() -> &'static LocalKey<RefCell<Vec<Vec<(usize, usize)>>>> {
        &SPANS
    }
}

/// A buffer from this thread's pool (empty, with whatever capacity it had), or a new one:
/// the one with the least values, which it drops.
pub fn take<T: Pooled>() -> Vec<T> {
    let mut v = remove_by(|v: &Vec<T>| std::cmp::Reverse(v.len())).unwrap_or_default();
    v.clear();
    v
}

/// The pooled buffer that maximises `key`, out of the pool (a few buffers per thread).
fn remove_by<T: Pooled, K: Ord>(key: impl Fn(&Vec<T>) -> K) -> Option<Vec<T>> {
    T::pool().with(|p| {
        let mut p = p.borrow_mut();
        let best = (0..p.len()).max_by_key(|&i| key(&p[i]))?;
        Some(p.swap_remove(best))
    })
}

/// Hands a buffer back to this thread's pool.
pub fn give<T: Pooled>(v: Vec<T>) {
    T::pool().with(|p| p.borrow_mut().push(v));
}

/// Runs `f` on a pooled buffer (empty on entry).
pub fn with<T: Pooled, R>(f: impl FnOnce(&mut Vec<T>) -> R) -> R {
    let mut v = take();
    let r = f(&mut v);
    give(v);
    r
}

/// The `f32`s of a cache line.
pub const LINE_VALUES: usize = 16;

/// The `len` values of `buffer` from its first cache line boundary (`buffer` holds
/// [`LINE_VALUES`] more): large blocks from the allocator start 16 bytes past a page
/// boundary, where a vector load at every whole number of lines from the start would
/// straddle two.
pub fn line_aligned(buffer: &mut [f32], len: usize) -> &mut [f32] {
    let start = buffer.as_ptr().align_offset(64).min(LINE_VALUES);
    &mut buffer[start..start + len]
}

/// `buffer` emptied and refilled with `len` copies of `value` from its first cache line
/// ([`line_aligned`]), for a kernel's blocked copies that must not straddle lines: the
/// allocator's large blocks start 16 bytes past one.
pub fn filled_line_aligned(buffer: &mut Vec<f32>, len: usize, value: f32) -> &mut [f32] {
    buffer.clear();
    buffer.resize(len + LINE_VALUES, value);
    line_aligned(buffer, len)
}

/// [`with_len`], the `len` values starting on a cache line ([`line_aligned`]).
pub fn with_line_aligned_len<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_len(len + LINE_VALUES, |buffer| f(line_aligned(buffer, len)))
}

/// Runs `f` on `len` values from a pooled buffer, for a kernel that writes all of them before
/// it reads any: what they hold on entry is whatever the buffer last held (zeros where it
/// grows). Zeroing a buffer only to overwrite it was 2–4% of MobileNetV2's time.
///
/// The shortest of this thread's [`with_len`] buffers that holds `len` values is used, else
/// the longest, grown (a pool of their own, which [`take`] never empties), so the packed
/// panels of one product are not zeroed again for the next. Taking the longest every time
/// grew every buffer of nested uses to the longest's size: an im2col tile and the panels of
/// its product each became 1 MiB on Xception, 3.2 MB of scratch on one thread.
pub fn with_len<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let fitting = KEPT.with(|p| {
        let mut p = p.borrow_mut();
        let best = (0..p.len())
            .filter(|&i| p[i].len() >= len)
            .min_by_key(|&i| p[i].len())
            .or_else(|| (0..p.len()).max_by_key(|&i| p[i].len()))?;
        Some(p.swap_remove(best))
    });
    let mut v = fitting.unwrap_or_default();
    // Grown where it is shorter than `len`, never shortened: cut to a short product's length,
    // it would be zero-filled back up by the next long one. What it held need not be kept,
    // so it is freed first and the new one is exactly `len` long: grown in place, a buffer
    // doubled its capacity and left each smaller one behind as a hole in the heap.
    if v.len() < len {
        drop(std::mem::take(&mut v));
        v = vec![0.0; len];
    }
    let r = f(&mut v[..len]);
    KEPT.with(|p| p.borrow_mut().push(v));
    r
}

/// Runs `f` on `len` zeros from a pooled buffer.
pub fn with_zeros<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with(|v: &mut Vec<f32>| {
        v.resize(len, 0.0);
        f(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_buffer_is_not_the_one_that_keeps_its_values() {
        give(Vec::<f32>::new());
        give(Vec::<f32>::new());
        with_len(100, |v| v.fill(7.0));
        let taken: Vec<Vec<f32>> = (0..4).map(|_| take::<f32>()).collect();
        taken.into_iter().for_each(give);
        with_len(100, |v| {
            assert!(v.iter().all(|&x| x == 7.0), "kept, not zeroed")
        });
    }

    #[test]
    fn a_short_use_does_not_cut_the_buffer_that_a_long_one_then_zeroes_again() {
        give(Vec::<f32>::new());
        with_len(1000, |v| v.fill(7.0));
        with_len(10, |v| assert_eq!(v.len(), 10));
        with_len(1000, |v| {
            assert!(
                v.iter().all(|&x| x == 7.0),
                "kept whole, not grown back with zeros"
            )
        });
    }

    #[test]
    fn nested_uses_keep_buffers_of_their_own_sizes() {
        // A thread of its own, so that no other test's buffers are in its pool.
        let lens = std::thread::spawn(|| {
            for _ in 0..3 {
                with_len(10, |_| with_len(1000, |_| ()));
            }
            KEPT.with(|p| {
                let mut lens: Vec<usize> = p.borrow().iter().map(Vec::len).collect();
                lens.sort();
                lens
            })
        })
        .join()
        .expect("the thread ran");
        assert_eq!(
            lens,
            [10, 1000],
            "the outer use took the short one each time"
        );
    }

    #[test]
    fn a_buffer_comes_back_empty_and_nested_uses_get_their_own() {
        with(|a: &mut Vec<f32>| {
            a.extend([1.0, 2.0]);
            with(|b: &mut Vec<f32>| {
                assert!(b.is_empty());
                b.push(3.0);
            });
        });
        with_zeros(3, |z| assert_eq!(z, [0.0; 3]));
        let reused = take::<f32>();
        assert!(reused.is_empty() && reused.capacity() >= 2);
        give(reused);
    }
}
