//! The runtime's threads: one layer's output split over the cores, for latency at batch 1.
//!
//! A model runs its forward pass inside its own rayon pool ([`Threads`]). While the pass runs,
//! every other worker of the pool waits for work by spinning, not sleeping: waking a sleeping
//! thread costs more than a piece of a small convolution is worth (docs/performance/threads.md has
//! the measurements). A pool with a worker for every CPU the process may run on keeps each worker
//! on a CPU of its own (`pinning`). Splits are by whole output rows, and each row is computed by
//! the same code whatever the split, so results do not depend on the number of threads. The default
//! count also watches its own speed (`adaptive`) and how busy other programs keep the CPUs
//! (`load`): on a machine whose cores they hold it runs single images on one thread
//! ([`Threads::run`]); batches it always splits, an image to a thread ([`Pass`]).

mod adaptive;
mod load;
mod pinning;
mod round_trip;

pub use round_trip::cpu_round_trip;

use adaptive::{Choice, Timing};

use ndarray::{ArrayViewMut2, Axis};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Below this many multiply-adds in a part, it is not split off: handing a part to another
/// core costs a few microseconds.
const MIN_WORK_PER_PART: usize = 1 << 16;

/// A forward pass with fewer multiply-adds than this runs on the calling thread: entering the
/// pool and waking its workers costs more than splitting saves on a small model (the LeNet-5
/// fixture, 0.4M multiply-adds, runs faster on one thread; the Caffe LeNet-5, 2.3M, on two).
pub const MIN_WORK_FOR_THREADS: usize = 1 << 20;

/// A model's worker threads, started on its first forward pass that can use them.
pub struct Threads {
    count: usize,
    /// Whether the pool's workers are pinned, one to each CPU, when it starts ([`pinning`]).
    pin: bool,
    pool: OnceLock<Option<rayon::ThreadPool>>,
    /// For the default count only: which of one thread and all of them is faster now, for
    /// single images ([`Pass::Layers`]).
    adapt: Option<Mutex<Choice>>,
    /// Single-image passes that could split, so far: `[run on one thread, split]`.
    layer_passes: [AtomicU64; 2],
}

/// How a pool has run its single-image passes ([`Threads::layer_passes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerPasses {
    /// On the calling thread alone: the default count's choice while one thread was the
    /// faster or other programs held the CPUs.
    pub one_thread: u64,
    /// Split over the pool.
    pub split: u64,
}

/// What a pass splits over the threads. A single image's layers are split at every layer,
/// each split waiting for its slowest part, so a core that another program holds for a
/// moment holds up the whole pass: the default count watches for that (`adaptive::Adaptive`). A
/// batch's images go to the threads from a queue, a whole image at a time (its layers are
/// not split further while other threads run theirs), so a thread whose core is busy takes
/// fewer of them and holds up no other: the default count always splits a batch. On a
/// 2-core virtual machine whose second core the host now and then took, MobileNetV2's
/// batches of 16 took 68 ms split against 130 on one thread, while the choice made for its
/// single images (one thread, then) had kept them at 95–130. With another program busy on
/// one core, a batch whose images also split their layers ran at 127–147 images/s against
/// 121–128 on one thread (and once at 88 against 124): the thread that had run out of
/// images took halves of the other's layers, which then waited on it. With each image
/// whole, 153–185.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pass {
    /// One image, its layers split.
    Layers,
    /// Several images, each on one thread.
    Images,
}

impl Threads {
    /// `requested` threads; 0 means one per core this process may run on (its CPU affinity,
    /// as `taskset` sets it, and its cgroup's CPU quota count), and adapts to the load.
    pub fn new(requested: usize) -> Threads {
        Threads::pinned_if(requested, false)
    }

    /// [`Threads::new`], the pool's workers each pinned to a CPU of its own where `pin` and
    /// the pool has one worker for every CPU the process may run on (`pinning`).
    pub fn pinned_if(requested: usize, pin: bool) -> Threads {
        let count = match requested {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Threads {
            count,
            pin,
            pool: OnceLock::new(),
            adapt: (requested == 0 && count > 1).then(|| Mutex::new(Choice::new(count))),
            layer_passes: Default::default(),
        }
    }

    /// The single-image passes with work enough to split, run on one thread and split, since
    /// the model loaded: with the default count, how its choice has gone.
    pub fn layer_passes(&self) -> LayerPasses {
        let [one_thread, split] = self
            .layer_passes
            .each_ref()
            .map(|n| n.load(Ordering::Relaxed));
        LayerPasses { one_thread, split }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Runs `f`, which does `work` multiply-adds, on this pool, the other workers spinning for
    /// work until it returns. With one thread, less work than [`MIN_WORK_FOR_THREADS`], a
    /// pool that cannot be started, or a default count that found one thread faster under the
    /// machine's present load, `f` runs on the calling thread.
    pub fn run<T: Send>(&self, work: usize, f: impl FnOnce() -> T + Send) -> T {
        self.run_pass(Pass::Layers, work, f)
    }

    /// [`Threads::run`] for a pass of kind `pass`: the default count adapts to the load for
    /// single images, and always splits batches ([`Pass`]).
    pub fn run_pass<T: Send>(&self, pass: Pass, work: usize, f: impl FnOnce() -> T + Send) -> T {
        if self.count < 2 || work < MIN_WORK_FOR_THREADS {
            return f();
        }
        let count = |split: bool| {
            if pass == Pass::Layers {
                self.layer_passes[usize::from(split)].fetch_add(1, Ordering::Relaxed);
            }
        };
        let Some(adapt) = self.adapt.as_ref().filter(|_| pass == Pass::Layers) else {
            count(true);
            return self.run_split(f);
        };
        let start = Instant::now();
        let (all, timing) = adapt
            .lock()
            .map_or((true, Timing::Steady), |mut a| a.choose(start));
        count(all);
        let out = if all { self.run_split(f) } else { f() };
        let nanos = start.elapsed().as_nanos() as f64 / work as f64;
        if let Ok(mut a) = adapt.lock() {
            a.timing.record(all, timing, nanos);
        }
        out
    }

    fn run_split<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let pool = self.pool.get_or_init(|| {
            // Asked when the pool starts, not at load: most small models never start one.
            let cpus = if self.pin {
                pinning::allowed_cpus()
            } else {
                Vec::new()
            };
            let pinned = if cpus.len() == self.count {
                cpus
            } else {
                Vec::new()
            };
            rayon::ThreadPoolBuilder::new()
                .num_threads(self.count)
                .thread_name(|i| format!("cxrm-runtime-{i}"))
                .start_handler(move |i| {
                    if let Some(&cpu) = pinned.get(i) {
                        // A worker that cannot be pinned runs where the scheduler puts it.
                        let _ = pinning::pin_to(cpu);
                    }
                })
                .build()
                .ok()
        });
        let Some(pool) = pool else { return f() };
        let done = AtomicBool::new(false);
        pool.install(|| with_spinners(self.count - 1, &done, f))
    }
}

/// Runs `f` on this worker with `spinners` jobs beside it, which the pool's other workers take
/// and spin in for work until `f` returns. Nested joins rather than a scope's spawned jobs:
/// a join keeps its other half on this thread's stack, where each spawned job was a heap
/// block, one allocation per pass on two threads.
fn with_spinners<T: Send>(spinners: usize, done: &AtomicBool, f: impl FnOnce() -> T + Send) -> T {
    if spinners == 0 {
        // Set on the way out, panics included: the joins wait for the spinners, which would
        // otherwise spin forever.
        let _stop = StopOnDrop(done);
        return f();
    }
    let spin = || spin_for_work(done);
    rayon::join(|| with_spinners(spinners - 1, done, f), spin).0
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs jobs other workers split off until `done`.
fn spin_for_work(done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => {}
            Some(rayon::Yield::Idle) => std::hint::spin_loop(),
            None => return,
        }
    }
}

/// How many parts a split may make here: inside a model's pool, one per thread; outside, 1
/// (a split from there would hand the work to rayon's global pool). Finer parts (two or four
/// per thread) let a core that is not slowed by other work take more of them, but each part
/// costs a hand-off: on LeNet-5 at batch 1, four per thread took 116-120 µs where one took
/// 90 µs (one thread: 104 µs).
fn parts() -> usize {
    match rayon::current_thread_index() {
        Some(_) if !WHOLE_ITEM.get() => rayon::current_num_threads(),
        _ => 1,
    }
}

thread_local! {
    /// Set while this thread runs an item of [`each`] beside other threads running theirs:
    /// the item's own splits then stay on this thread ([`parts`]).
    static WHOLE_ITEM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f(first_index, part)` over parts of `out` along `axis`, each a whole number of
/// `align` indices, in parallel where a part has at least `MIN_WORK_PER_PART` of
/// `work_per_index`.
pub fn split<T, F>(
    out: ArrayViewMut2<'_, T>,
    axis: Axis,
    align: usize,
    work_per_index: usize,
    f: &F,
) where
    T: Send,
    F: Fn(usize, ArrayViewMut2<'_, T>) + Sync,
{
    let along = |first, part: Along<'_, T>| f(first, part.0);
    split_parts(Along(out, axis), align, work_per_index, &along)
}

/// [`split`] over a row-major slice of rows `row_len` wide, by rows.
pub fn split_rows<T, F>(out: &mut [T], row_len: usize, align: usize, work_per_row: usize, f: &F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Sync,
{
    let row_len = row_len.max(1);
    let view = ArrayViewMut2::from_shape((out.len() / row_len, row_len), out).expect("whole rows");
    split(view, Axis(0), align, work_per_row, &|first, mut part| {
        f(
            first,
            part.as_slice_mut().expect("rows of a row-major slice"),
        )
    })
}

/// [`split`] over any [`Parts`]: several outputs cut at the same indices, for one.
pub fn split_parts<P, F>(out: P, align: usize, work_per_index: usize, f: &F)
where
    P: Parts,
    F: Fn(usize, P) + Sync,
{
    let plan = Plan {
        align: align.max(1),
        work_per_index,
    };
    plan.run(out, parts(), 0, f)
}

/// What a split cuts into parts: an output, or several cut at the same index.
pub trait Parts: Send + Sized {
    /// The indices to split.
    fn indices(&self) -> usize;
    /// Indices `..index`, and the rest.
    fn split_at(self, index: usize) -> (Self, Self);
}

/// A 2-D output split along one axis.
pub struct Along<'a, T>(pub ArrayViewMut2<'a, T>, pub Axis);

impl<T: Send> Parts for Along<'_, T> {
    fn indices(&self) -> usize {
        self.0.len_of(self.1)
    }

    fn split_at(self, index: usize) -> (Self, Self) {
        let (a, b) = self.0.split_at(self.1, index);
        (Along(a, self.1), Along(b, self.1))
    }
}

/// Two outputs cut at the same indices (the first one's count).
impl<A: Parts, B: Parts> Parts for (A, B) {
    fn indices(&self) -> usize {
        self.0.indices()
    }

    fn split_at(self, index: usize) -> (Self, Self) {
        let ((a0, a1), (b0, b1)) = (self.0.split_at(index), self.1.split_at(index));
        ((a0, b0), (a1, b1))
    }
}

/// Runs `f(index, item)` on every item of `items` (taken as they come, nothing collected): a
/// batch's images, for one. One worker per thread (where
/// `work_per_item` multiply-adds are worth a hand-off) takes the next item from a shared queue
/// until none is left, so a thread whose core is free takes the images of one that shares its
/// core with another program: split once per thread, a batch waited for the slower half, and
/// MobileNetV2 at batch 16 on two cores, one of them busy, ran at 82 images/s against 110 on
/// one thread. Split in halves down to single items instead, a thread waiting inside a
/// layer's split could start another image from its own queue on top of the one it was
/// running, and hold more images' activations than [`Threads::count`]. While several
/// threads run items, each item's own splits stay on its thread: a thread that had run out
/// of items took halves of another's layers, and that one then waited on it whenever its
/// core was busy.
pub fn each<I, F>(items: I, work_per_item: usize, f: &F)
where
    I: ExactSizeIterator + Send,
    I::Item: Send,
    F: Fn(usize, I::Item) + Sync,
{
    fn workers<I, F>(
        queue: &Mutex<std::iter::Enumerate<I>>,
        (count, beside_others): (usize, bool),
        f: &F,
    ) where
        I: Iterator + Send,
        I::Item: Send,
        F: Fn(usize, I::Item) + Sync,
    {
        if count < 2 {
            // The lock is held only to take the next item, never while one runs.
            let next = || queue.lock().ok().and_then(|mut q| q.next());
            let outer = WHOLE_ITEM.replace(beside_others);
            while let Some((i, item)) = next() {
                f(i, item);
            }
            WHOLE_ITEM.set(outer);
            return;
        }
        let left = count / 2;
        rayon::join(
            || workers(queue, (left, true), f),
            || workers(queue, (count - left, true), f),
        );
    }
    let threads = parts().min(items.len());
    let count = if items.len().saturating_mul(work_per_item) >= 2 * MIN_WORK_PER_PART {
        threads
    } else {
        1
    };
    workers(&Mutex::new(items.enumerate()), (count, false), f)
}

struct Plan {
    align: usize,
    work_per_index: usize,
}

impl Plan {
    fn run<P, F>(&self, out: P, parts: usize, first: usize, f: &F)
    where
        P: Parts,
        F: Fn(usize, P) + Sync,
    {
        let len = out.indices();
        // The multiple of `align` nearest the middle, so both parts get even shares.
        let half = (len + self.align) / (2 * self.align) * self.align;
        let small = (len - half.min(len)) * self.work_per_index < MIN_WORK_PER_PART;
        if parts < 2 || half == 0 || half >= len || small {
            return f(first, out);
        }
        let (a, b) = out.split_at(half);
        let left = parts / 2;
        rayon::join(
            || self.run(a, left, first, f),
            || self.run(b, parts - left, first + half, f),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn large_work_is_split_in_aligned_parts_that_cover_every_row() {
        let threads = Threads::new(2);
        let mut out = vec![0.0f32; 600 * 4];
        let calls = AtomicUsize::new(0);
        threads.run(usize::MAX, || {
            split_rows(&mut out, 4, 6, 1 << 12, &|first, part| {
                calls.fetch_add(1, Ordering::Relaxed);
                assert_eq!(first % 6, 0);
                for (i, row) in part.chunks_mut(4).enumerate() {
                    row.fill((first + i) as f32);
                }
            })
        });
        for (i, row) in out.chunks(4).enumerate() {
            assert!(row.iter().all(|&v| v == i as f32), "row {i}");
        }
        // Which thread runs a part is up to the scheduler; that the work was split is not.
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_pair_of_outputs_is_cut_at_the_same_indices() {
        // Words of a 2-row output of 600 columns and a 1-row output beside it, cut by columns.
        let (mut words, mut sums) = (vec![0u64; 2 * 600], vec![0.0f32; 600]);
        let calls = AtomicUsize::new(0);
        Threads::new(2).run(usize::MAX, || {
            let words = ArrayViewMut2::from_shape((2, 600), &mut words[..]).unwrap();
            let sums = ArrayViewMut2::from_shape((1, 600), &mut sums[..]).unwrap();
            let pair = (Along(words, Axis(1)), Along(sums, Axis(1)));
            split_parts(pair, 64, 1 << 12, &|first, (mut words, mut sums)| {
                calls.fetch_add(1, Ordering::Relaxed);
                assert_eq!(first % 64, 0);
                assert_eq!(words.0.ncols(), sums.0.ncols());
                for j in 0..words.0.ncols() {
                    words.0[[0, j]] = (first + j) as u64;
                    words.0[[1, j]] = 2 * (first + j) as u64;
                    sums.0[[0, j]] = (first + j) as f32;
                }
            })
        });
        for j in 0..600 {
            assert_eq!((words[j], words[600 + j]), (j as u64, 2 * j as u64));
            assert_eq!(sums[j], j as f32);
        }
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn small_work_and_single_threads_do_not_split() {
        let mut out = vec![0.0f32; 600 * 4];
        for (threads, work) in [(2, 1), (1, 1 << 20)] {
            let calls = AtomicUsize::new(0);
            Threads::new(threads).run(usize::MAX, || {
                split_rows(&mut out, 4, 6, work, &|_, _| {
                    calls.fetch_add(1, Ordering::Relaxed);
                })
            });
            assert_eq!(calls.load(Ordering::Relaxed), 1);
        }
    }

    #[test]
    fn batches_split_without_touching_the_choice_for_single_images() {
        let threads = Threads {
            count: 2,
            pin: false,
            pool: OnceLock::new(),
            adapt: Some(Mutex::new(Choice::new(2))),
            layer_passes: Default::default(),
        };
        let calibrated = || {
            threads
                .adapt
                .as_ref()
                .unwrap()
                .lock()
                .unwrap()
                .timing
                .calibration
        };
        let on_pool = || rayon::current_thread_index().is_some();
        for _ in 0..3 {
            assert!(threads.run_pass(Pass::Images, usize::MAX, on_pool));
        }
        assert_eq!(calibrated(), 0);
        threads.run(usize::MAX, || ());
        assert_eq!(calibrated(), 1);
    }

    #[test]
    fn an_image_beside_others_keeps_its_splits_on_its_own_thread() {
        let threads = Threads::new(2);
        let mut items = [0usize; 8];
        threads.run_pass(Pass::Images, usize::MAX, || {
            each(items.iter_mut(), usize::MAX / 16, &|_, item| {
                *item = parts()
            });
        });
        assert_eq!(items, [1; 8]);
        // A single image still splits over the pool.
        assert_eq!(threads.run(usize::MAX, parts), 2);
    }

    #[test]
    fn the_pool_counts_how_single_images_ran_and_not_batches() {
        let threads = Threads::new(2);
        threads.run(usize::MAX, || ());
        threads.run(1, || ());
        threads.run_pass(Pass::Images, usize::MAX, || ());
        let counted = LayerPasses {
            one_thread: 0,
            split: 1,
        };
        assert_eq!(threads.layer_passes(), counted);
        let one = Threads::new(1);
        one.run(usize::MAX, || ());
        assert_eq!(one.layer_passes(), LayerPasses::default());
    }

    #[test]
    fn an_explicit_count_does_not_adapt() {
        assert!(Threads::new(2).adapt.is_none());
        assert!(Threads::new(1).adapt.is_none());
    }

    #[test]
    fn a_panic_inside_a_pass_reaches_the_caller_instead_of_hanging() {
        let threads = Threads::new(2);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            threads.run(usize::MAX, || panic!("inside the pass"))
        }));
        assert!(caught.is_err());
        // The pool still works afterwards.
        assert_eq!(threads.run(usize::MAX, || 7), 7);
    }
}
