//! The activation arena's plan: where each value of a forward pass lives in one buffer per
//! image, worked out at load from the sizes and lifetimes the graph and the fixed input
//! shape give. Two values share memory only when no step needs both; a forward pass then
//! writes every layer's output into its place and allocates nothing.

use std::ops::Range;

/// A value's size (in `f32`s) and the steps that need it: `first` writes it, `last` is the
/// last that reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub len: usize,
    pub first: usize,
    pub last: usize,
}

impl Lifetime {
    /// Whether some step needs both (the tests' definition of what [`Meetings`] finds).
    #[cfg(test)]
    fn meets(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Offsets are multiples of this many `f32`s: 64 bytes, a cache line, so no two values share
/// one and every value starts where the vector kernels load fastest.
const ALIGN: usize = 16;

/// Where each value lives, and how long the buffer must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub offsets: Vec<usize>,
    /// The buffer's length in `f32`s.
    pub len: usize,
    /// The most values alive at one step, summed: no placement can be shorter.
    pub peak_live: u64,
}

impl Placement {
    pub fn range(&self, value: usize, len: usize) -> Range<usize> {
        self.offsets[value]..self.offsets[value] + len
    }
}

/// Places the values largest first, each at the lowest offset that no value it meets in time
/// already covers (the greedy-by-size heuristic of TensorFlow Lite's arena planner; on a chain
/// of layers it gives two buffers, and on branching graphs it stays close to the peak). The
/// values a value meets are found through `Meetings`, so a long chain costs `n log n`, not
/// `n²` (a 65,534-layer chain took 3.8 s to plan with a scan of every placed value).
pub fn place(values: &[Lifetime]) -> Placement {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by_key(|&v| (std::cmp::Reverse(values[v].len), values[v].first, v));
    let meetings = Meetings::new(values);
    let mut offsets = vec![0usize; values.len()];
    let mut placed = vec![false; values.len()];
    let mut len = 0usize;
    let mut taken: Vec<(usize, usize)> = Vec::new();
    for &v in &order {
        let value = values[v];
        taken.clear();
        meetings.each(&value, &mut |p| {
            if placed[p] {
                taken.push((offsets[p], offsets[p].saturating_add(values[p].len)));
            }
        });
        taken.sort_unstable();
        let mut at = 0usize;
        for &(start, end) in &taken {
            if at.saturating_add(value.len) <= start {
                break;
            }
            at = at.max(end.next_multiple_of(ALIGN));
        }
        offsets[v] = at;
        len = len.max(at.saturating_add(value.len));
        placed[v] = true;
    }
    Placement {
        offsets,
        len,
        peak_live: peak_live(values),
    }
}

/// The values sorted by their first step, with a tree of the latest `last` over each run of
/// them: the values that meet `[first, last]` are those in the prefix starting by `last` whose
/// own `last` reaches `first`, and the tree skips every run with none.
struct Meetings<'a> {
    values: &'a [Lifetime],
    /// Value indices by first step.
    by_first: Vec<usize>,
    /// `reach[node]`: the latest `last` under the node (a segment tree over `by_first`).
    reach: Vec<usize>,
    leaves: usize,
}

impl<'a> Meetings<'a> {
    fn new(values: &'a [Lifetime]) -> Self {
        let mut by_first: Vec<usize> = (0..values.len()).collect();
        by_first.sort_by_key(|&v| values[v].first);
        let leaves = values.len().next_power_of_two().max(1);
        let mut reach = vec![0usize; 2 * leaves];
        for (i, &v) in by_first.iter().enumerate() {
            reach[leaves + i] = values[v].last;
        }
        for node in (1..leaves).rev() {
            reach[node] = reach[2 * node].max(reach[2 * node + 1]);
        }
        Meetings {
            values,
            by_first,
            reach,
            leaves,
        }
    }

    /// Calls `f` with every value that meets `value` (itself included).
    fn each(&self, value: &Lifetime, f: &mut dyn FnMut(usize)) {
        let end = self
            .by_first
            .partition_point(|&v| self.values[v].first <= value.last);
        self.visit(1, 0, self.leaves, end, value.first, f);
    }

    fn visit(
        &self,
        node: usize,
        lo: usize,
        hi: usize,
        end: usize,
        from: usize,
        f: &mut dyn FnMut(usize),
    ) {
        if lo >= end || self.reach[node] < from {
            return;
        }
        if node >= self.leaves {
            f(self.by_first[lo]);
            return;
        }
        let mid = (lo + hi) / 2;
        self.visit(2 * node, lo, mid, end, from, f);
        self.visit(2 * node + 1, mid, hi, end, from, f);
    }
}

/// The most `f32`s alive at any one step: the largest live set.
pub fn peak_live(values: &[Lifetime]) -> u64 {
    let steps = values.iter().map(|v| v.last + 1).max().unwrap_or(0);
    let mut change = vec![0i128; steps + 1];
    for v in values {
        change[v.first] += v.len as i128;
        change[v.last + 1] -= v.len as i128;
    }
    let (mut live, mut peak) = (0i128, 0i128);
    for c in change {
        live += c;
        peak = peak.max(live);
    }
    u64::try_from(peak).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(values: &[Lifetime]) -> Placement {
        let p = place(values);
        for (a, va) in values.iter().enumerate() {
            assert_eq!(p.offsets[a] % ALIGN, 0);
            assert!(p.offsets[a] + va.len <= p.len);
            for (b, vb) in values.iter().enumerate().skip(a + 1) {
                let apart =
                    p.offsets[a] + va.len <= p.offsets[b] || p.offsets[b] + vb.len <= p.offsets[a];
                assert!(!va.meets(vb) || apart, "values {a} and {b} overlap");
            }
        }
        assert!(p.len as u64 >= p.peak_live);
        p
    }

    #[test]
    fn a_chain_of_layers_takes_two_buffers() {
        // Each layer reads the one before: value i lives through steps i and i + 1.
        let chain: Vec<Lifetime> = [64, 128, 32, 128, 16]
            .iter()
            .enumerate()
            .map(|(i, &len)| Lifetime {
                len,
                first: i,
                last: i + 1,
            })
            .collect();
        let p = check(&chain);
        // The largest pair alive together (64 + 128 at step 1), and no more.
        assert_eq!(p.peak_live, 192);
        assert_eq!(p.len, 192);
    }

    #[test]
    fn values_that_meet_never_overlap_and_a_branch_stays_near_the_peak() {
        // A residual block: 0 feeds 1 and the add at 3; 1 feeds 2; 2 and 0 feed 3.
        let block = [
            Lifetime {
                len: 100,
                first: 0,
                last: 3,
            },
            Lifetime {
                len: 50,
                first: 1,
                last: 2,
            },
            Lifetime {
                len: 100,
                first: 2,
                last: 3,
            },
            Lifetime {
                len: 100,
                first: 3,
                last: 4,
            },
            Lifetime {
                len: 7,
                first: 4,
                last: 4,
            },
        ];
        let p = check(&block);
        assert_eq!(p.peak_live, 300);
        assert!(p.len as u64 <= 2 * p.peak_live);
        // Pseudo-random lifetimes: never an overlap.
        let mut rng = cxrm_format::lcg::Lcg(7);
        let values: Vec<Lifetime> = (0..200)
            .map(|i| {
                let first = i / 2;
                Lifetime {
                    len: 1 + (rng.centred().abs() * 1000.0) as usize,
                    first,
                    last: first + (rng.centred().abs() * 20.0) as usize,
                }
            })
            .collect();
        check(&values);
    }

    #[test]
    fn meetings_are_exactly_the_overlapping_lifetimes() {
        let mut rng = cxrm_format::lcg::Lcg(11);
        let values: Vec<Lifetime> = (0..300)
            .map(|_| {
                let first = (rng.centred().abs() * 100.0) as usize;
                Lifetime {
                    len: 1,
                    first,
                    last: first + (rng.centred().abs() * 30.0) as usize,
                }
            })
            .collect();
        let meetings = Meetings::new(&values);
        for v in &values {
            let mut found = Vec::new();
            meetings.each(v, &mut |p| found.push(p));
            found.sort_unstable();
            let expected: Vec<usize> = (0..values.len()).filter(|&p| values[p].meets(v)).collect();
            assert_eq!(found, expected);
        }
    }

    #[test]
    fn a_long_chain_takes_two_buffers() {
        let chain: Vec<Lifetime> = (0..200_000)
            .map(|i| Lifetime {
                len: 16,
                first: i,
                last: i + 1,
            })
            .collect();
        let p = place(&chain);
        assert_eq!(p.len, 32);
    }
}
