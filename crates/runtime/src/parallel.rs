//! The runtime's threads: one layer's output split over the cores, for latency at batch 1.
//!
//! A model runs its forward pass inside its own rayon pool ([`Threads`]). While the pass runs,
//! every other worker of the pool waits for work by spinning, not sleeping: waking a sleeping
//! thread costs more than a piece of a small convolution is worth
//! (docs/performance/threads.md has the measurements). A pool with a worker for every CPU the process may run on keeps each
//! worker on a CPU of its own ([`pinning`]). Splits are by whole output rows, and
//! each row is computed by the same code whatever the split, so results do not depend on the
//! number of threads. The default count also watches its own speed and how busy other
//! programs keep the CPUs ([`load`]): on a machine whose cores they hold it runs single images
//! on one thread ([`Threads::run`]); batches it always splits, an image to a thread ([`Pass`]).

mod load;
mod pinning;
mod round_trip;

pub use round_trip::cpu_round_trip;

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

/// The default count's choice for single images: timed ([`Adaptive`]), and overruled while
/// other programs hold the CPUs ([`load`]).
struct Choice {
    timing: Adaptive,
    /// The pool's threads, one per CPU the process may run on.
    count: usize,
    /// Made at the first pass that could split (most small models never reach one): `None`
    /// inside where the CPUs' load cannot be read.
    load: Option<Option<load::Meter>>,
}

impl Choice {
    fn new(count: usize) -> Choice {
        Choice {
            timing: Adaptive::default(),
            count,
            load: None,
        }
    }

    fn choose(&mut self, now: Instant) -> (bool, Timing) {
        let count = self.count;
        let meter = self
            .load
            .get_or_insert_with(|| load::Meter::new(count, pinning::allowed_cpus()));
        if let Some(crowded) = meter.as_mut().and_then(|m| m.crowded(now)) {
            self.timing.crowded = crowded;
        }
        self.timing.choose(now)
    }
}

/// What a pass splits over the threads. A single image's layers are split at every layer,
/// each split waiting for its slowest part, so a core that another program holds for a
/// moment holds up the whole pass: the default count watches for that ([`Adaptive`]). A
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

/// How often the setting not in use is timed again, so that a change of load is noticed: after
/// this long, and at least [`PROBE_PASSES`] passes, so that a probe costs a few percent of the
/// time even when each pass is a long batch (and sooner while the choice is young,
/// [`Adaptive::interval`]).
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_PASSES: u32 = 16;

/// The default thread count's choice between running a pass on the calling thread alone and
/// splitting it over every core. On a machine where other programs keep the cores busy a split
/// pass waits for whichever part's thread the scheduler has set aside, and can take twice as
/// long as one thread; on an idle machine it is up to twice as fast. So each setting's time
/// per multiply-add is kept (the fastest of the first [`CALIBRATION_PASSES`], then the median
/// of its last passes, [`Recent`]), the faster one runs, and the other is tried again every
/// [`PROBE_EVERY`] and [`PROBE_PASSES`], or sooner while the choice is young. Both give the
/// same bits, so the choice changes only the speed. Only single images are timed here:
/// batches always split ([`Pass`]), and a probe on a batch used to cost the whole batch.
#[derive(Default)]
struct Adaptive {
    /// Nanoseconds per multiply-add: `[one thread, all threads]`.
    cost: [Recent; 2],
    last_probe: Option<Instant>,
    passes_since_probe: u32,
    /// Calibration passes chosen so far (up to [`CALIBRATION_PASSES`]).
    calibration: u32,
    /// Passes after which a probe is due even within [`PROBE_EVERY`]: [`PROBE_PASSES`] at
    /// first, doubled by each probe that confirms the choice, back to it when one changes
    /// it. So a choice made on a few noisy passes is checked again within the first few dozen
    /// (a `cxrm bench` round of 40 passes ran whole on the wrong setting), while a settled one
    /// costs ever fewer probes.
    interval: u32,
    /// The setting of the last pass recorded.
    last_all: Option<bool>,
    /// Passes of a probe of the split still to come (it takes three).
    probe_again: u8,
    /// Whether a probe has come since the calibration: the first comes after
    /// [`FIRST_PROBE_PASSES`].
    probed: bool,
    /// Whether other programs held the CPUs at the last reading ([`load`]): one thread then
    /// runs, and the split is not probed, whatever the times say.
    crowded: bool,
}

/// The first passes take the split four times (the first starts the pool), then one thread
/// twice, and each setting keeps its fastest. One pass of each was too few: a single slow
/// pass (the pool's threads still starting, a burst from another process) sent one run of
/// `cxrm bench` in two to one thread on an idle 2-core machine, where two threads took 4.8 ms
/// a pass against 8.2 ms, and no probe came before the run ended. Four turns of two (eight
/// passes) cost 9–11% at one busy core, where each split pass takes about twice one thread's
/// time.
///
/// The first split pass after passes on one thread is not timed at all: the other cores have
/// idled meanwhile, and on a virtual machine waking an idle virtual CPU cost that pass 5–12 ms
/// more (MobileNetV2: 16–18 ms against 5.5–6), enough to tip the choice to one thread on an
/// idle machine. The next few can still be slow: traced on the Zen 4 VM, MobileNetV2's first
/// timed split pass took 0.058–0.067 ns per multiply-add in two runs of four, against 0.028
/// on one thread and 0.0175–0.019 for the split from then on, and those runs spent their
/// first 20 passes on one thread (in six alternating runs the default took 7.4–8.0 ms in
/// three, where `--threads 2` took 4.2–5.0). So the split's calibration times three passes
/// after the untimed one, and each probe of it two, keeping the fastest.
const CALIBRATION_PASSES: u32 = 6;
/// The passes after the calibration before the first probe. The calibration takes about
/// 0.1 s, and the host's other work can slow a few passes of it: on the 2-core VM, one run of
/// `cxrm bench` timed the split's calibration passes at 9.1–9.5 ms against one thread's 7.9
/// and ran its next 16 passes on one thread at 8.0–8.6 ms, until the probe timed the split
/// at 4.9. With four, such a start costs four passes, and an idle machine's first probe of
/// one thread costs one.
const FIRST_PROBE_PASSES: u32 = 4;
/// Calibration passes that take the split, the first of them untimed.
const CALIBRATION_SPLIT_PASSES: u32 = 4;

impl Adaptive {
    /// Whether the next pass splits over every core, and what its time is for: calibration,
    /// a probe (a timing of the setting that is not the faster one), or the running average.
    fn choose(&mut self, now: Instant) -> (bool, Timing) {
        if self.crowded && self.calibration >= CALIBRATION_PASSES {
            self.probe_again = 0;
            return (false, Timing::Steady);
        }
        if self.probe_again > 0 {
            self.probe_again -= 1;
            let timing = if self.probe_again == 1 {
                Timing::Probe
            } else {
                Timing::ProbeAgain
            };
            return (true, timing);
        }
        if self.calibration < CALIBRATION_PASSES {
            let all = self.calibration < CALIBRATION_SPLIT_PASSES;
            self.calibration += 1;
            self.last_probe = Some(now);
            self.passes_since_probe = 0;
            return (all, Timing::Calibration);
        }
        match self.cost.map(|c| c.estimate()) {
            [_, None] => (true, Timing::Probe),
            [None, _] => (false, Timing::Probe),
            [Some(one), Some(all)] => {
                let faster = all < one;
                let (most, least) = if self.probed {
                    (self.interval.max(PROBE_PASSES), PROBE_PASSES)
                } else {
                    (FIRST_PROBE_PASSES, FIRST_PROBE_PASSES)
                };
                let waited = self.passes_since_probe >= most
                    || self.passes_since_probe >= least
                        && self
                            .last_probe
                            .is_some_and(|t| now.duration_since(t) >= PROBE_EVERY);
                let probe_due = self.last_probe.is_none() || waited;
                if probe_due {
                    self.probed = true;
                    self.last_probe = Some(now);
                    self.passes_since_probe = 0;
                    self.probe_again = if faster { 0 } else { 2 };
                    (!faster, Timing::Probe)
                } else {
                    self.passes_since_probe += 1;
                    (faster, Timing::Steady)
                }
            }
        }
    }

    /// Calibration keeps each setting's fastest pass, a probe's time replaces that setting's
    /// estimate (and sets the wait for the next probe), and the setting in use keeps the
    /// median of its last passes. A split pass after one-thread passes is not recorded: it
    /// paid for waking the idle cores ([`CALIBRATION_PASSES`]).
    fn record(&mut self, all: bool, timing: Timing, nanos_per_work: f64) {
        let woke = all && self.last_all != Some(true);
        self.last_all = Some(all);
        if woke {
            return;
        }
        // A probe's last pass sets the wait for the next: one pass of one thread, the second
        // timed pass of the split (the faster of its two).
        let last_of_probe = match timing {
            Timing::Probe => !all,
            Timing::ProbeAgain => true,
            _ => false,
        };
        if last_of_probe && let Some(other) = self.cost[usize::from(!all)].estimate() {
            let probed = match (timing, self.cost[usize::from(all)].estimate()) {
                (Timing::ProbeAgain, Some(first)) => first.min(nanos_per_work),
                _ => nanos_per_work,
            };
            self.interval = if probed < other {
                PROBE_PASSES
            } else {
                self.interval.max(PROBE_PASSES).saturating_mul(2)
            };
        }
        let cost = &mut self.cost[usize::from(all)];
        match (cost.estimate(), timing) {
            (Some(c), Timing::Calibration | Timing::ProbeAgain) => {
                cost.restart(c.min(nanos_per_work))
            }
            (Some(_), Timing::Steady) => cost.push(nanos_per_work),
            _ => cost.restart(nanos_per_work),
        }
    }
}

/// A setting's last few times, whose median is its estimate. A moving average took 30% of
/// each pass: one pass slowed by another program (0.056 against 0.026 ns per multiply-add)
/// sent MobileNetV2 to one thread for the rest of a `cxrm bench` run, at 1.7× the time.
#[derive(Clone, Copy, Default)]
struct Recent {
    times: [f64; RECENT],
    len: usize,
    next: usize,
}

/// Passes in a setting's median: one or two outliers among five leave it where it was.
const RECENT: usize = 5;

impl Recent {
    /// The median, the lower of the middle two for an even count. (The upper one let a single
    /// slow pass decide: after calibration a setting holds one time, its fastest, and the
    /// next pass makes two. Traced on the 2-core VM, the second split pass after the
    /// calibration's one-thread passes took 9.8 ms against 4.7 for the split's fastest, still
    /// waking the other core, and sent MobileNetV2 to one thread for the next 16 passes.)
    fn estimate(&self) -> Option<f64> {
        let mut times = self.times;
        let times = &mut times[..self.len];
        times.sort_unstable_by(f64::total_cmp);
        times.get(times.len().checked_sub(1)? / 2).copied()
    }

    fn push(&mut self, time: f64) {
        self.times[self.next] = time;
        self.next = (self.next + 1) % RECENT;
        self.len = (self.len + 1).min(RECENT);
    }

    /// Forgets the older times: `time` alone is the estimate.
    fn restart(&mut self, time: f64) {
        *self = Recent::default();
        self.push(time);
    }
}

/// What a pass's time is recorded for ([`Adaptive::record`]).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Timing {
    /// One of the first passes: each setting keeps its fastest.
    Calibration,
    /// The setting not in use, timed again: its time replaces the old one.
    Probe,
    /// The split's second timed pass of a probe: the faster of the two is kept.
    ProbeAgain,
    /// The setting in use: one of its last passes, whose median is its estimate.
    Steady,
}

impl Threads {
    /// `requested` threads; 0 means one per core this process may run on (its CPU affinity,
    /// as `taskset` sets it, and its cgroup's CPU quota count), and adapts to the load.
    pub fn new(requested: usize) -> Threads {
        Threads::pinned_if(requested, false)
    }

    /// [`Threads::new`], the pool's workers each pinned to a CPU of its own where `pin` and
    /// the pool has one worker for every CPU the process may run on ([`pinning`]).
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
/// `align` indices, in parallel where a part has at least [`MIN_WORK_PER_PART`] of
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
    fn the_default_count_runs_the_faster_setting_and_probes_the_other() {
        let mut a = Adaptive::default();
        let t0 = Instant::now();
        // The first passes take the split four times (it starts the pool), then one thread
        // twice; each keeps its fastest, and a split pass after one-thread passes (the
        // pool's first, or after an idle spell) is not timed.
        let times = [50.0, 1.9, 0.6, 0.7, 1.0, 1.1];
        for (pass, time) in times.into_iter().enumerate() {
            let split = pass < 4;
            assert_eq!(a.choose(t0), (split, Timing::Calibration));
            a.record(split, Timing::Calibration, time);
        }
        assert_eq!(a.cost.map(|c| c.estimate()), [Some(1.0), Some(0.6)]);
        // The split is faster. One thread is probed again after FIRST_PROBE_PASSES passes,
        // then after PROBE_PASSES; a probe that confirms the choice doubles the wait for the
        // next.
        let soon = t0 + Duration::from_millis(10);
        // (The later waits count the untimed split pass after each probe.)
        for wait in [
            FIRST_PROBE_PASSES,
            PROBE_PASSES * 2 - 1,
            4 * PROBE_PASSES - 1,
        ] {
            for _ in 0..wait {
                assert_eq!(a.choose(soon), (true, Timing::Steady));
                a.record(true, Timing::Steady, 0.6);
            }
            assert_eq!(a.choose(soon), (false, Timing::Probe));
            a.record(false, Timing::Probe, 1.0);
            // The split pass after it waits for the idle cores: not timed.
            assert_eq!(a.choose(soon), (true, Timing::Steady));
            a.record(true, Timing::Steady, 99.0);
            assert_eq!(a.cost[1].estimate(), Some(0.6));
        }
        // Past PROBE_EVERY a probe comes after PROBE_PASSES passes whatever the wait.
        for _ in 1..PROBE_PASSES {
            assert_eq!(a.choose(soon), (true, Timing::Steady));
        }
        let at = t0 + PROBE_EVERY + Duration::from_millis(10);
        assert_eq!(a.choose(at), (false, Timing::Probe));
        // A probe's time replaces the old one; one that finds the other setting faster
        // brings the wait back to PROBE_PASSES.
        a.record(false, Timing::Probe, 0.5);
        assert_eq!(
            (a.cost[0].estimate(), a.interval),
            (Some(0.5), PROBE_PASSES)
        );
        a.record(false, Timing::Probe, 0.9);
        // One slow split pass, or two, among five: the median stays, and so does the split.
        for time in [0.6, 0.6, 5.0, 0.6, 4.0] {
            a.record(true, Timing::Steady, time);
        }
        let at = t0 + PROBE_EVERY + Duration::from_millis(15);
        assert_eq!(a.choose(at), (true, Timing::Steady));
        // A busy machine: the split slows down; the median follows it and one thread takes
        // over.
        for _ in 0..10 {
            a.record(true, Timing::Steady, 2.0);
        }
        let at = t0 + PROBE_EVERY + Duration::from_millis(20);
        assert_eq!(a.choose(at), (false, Timing::Steady));
        a.record(false, Timing::Steady, 0.9);
        // A probe of the split is three passes: the first is not timed, and the faster of
        // the other two is kept.
        for _ in 1..PROBE_PASSES {
            assert_eq!(a.choose(at), (false, Timing::Steady));
        }
        let later = at + PROBE_EVERY;
        assert_eq!(a.choose(later), (true, Timing::Probe));
        a.record(true, Timing::Probe, 50.0);
        assert_eq!(a.choose(later), (true, Timing::Probe));
        a.record(true, Timing::Probe, 1.5);
        assert_eq!(a.choose(later), (true, Timing::ProbeAgain));
        a.record(true, Timing::ProbeAgain, 0.5);
        assert_eq!(
            (a.cost[1].estimate(), a.interval),
            (Some(0.5), PROBE_PASSES)
        );
        assert_eq!(a.choose(later), (true, Timing::Steady));
    }

    #[test]
    fn one_slow_pass_after_calibration_does_not_send_the_split_to_one_thread() {
        let mut a = Adaptive::default();
        let t0 = Instant::now();
        for (pass, time) in [50.0, 0.6, 0.7, 0.6, 1.0, 1.1].into_iter().enumerate() {
            let split = pass < 4;
            assert_eq!(a.choose(t0), (split, Timing::Calibration));
            a.record(split, Timing::Calibration, time);
        }
        // The first split pass after the one-thread passes is not timed; the second is still
        // slow (the other core waking): the split's fastest and it make two times, whose
        // lower one stands.
        for time in [9.0, 5.0] {
            assert_eq!(a.choose(t0), (true, Timing::Steady));
            a.record(true, Timing::Steady, time);
        }
        assert_eq!(a.cost[1].estimate(), Some(0.6));
        assert_eq!(a.choose(t0), (true, Timing::Steady));
        // A second slow pass of three is the median: the split has slowed down.
        a.record(true, Timing::Steady, 5.0);
        assert_eq!(a.choose(t0), (false, Timing::Steady));
    }

    #[test]
    fn a_crowded_machine_runs_one_thread_without_probing_the_split_until_it_clears() {
        let mut a = Adaptive::default();
        let t0 = Instant::now();
        for (pass, time) in [50.0, 0.6, 0.6, 0.6, 1.0, 1.0].into_iter().enumerate() {
            let split = pass < 4;
            assert_eq!(a.choose(t0), (split, Timing::Calibration));
            a.record(split, Timing::Calibration, time);
        }
        // The split times faster, but another program holds a CPU: one thread, and no probe
        // of the split however long it lasts.
        a.crowded = true;
        let later = t0 + 10 * PROBE_EVERY;
        for _ in 0..4 * PROBE_PASSES {
            assert_eq!(a.choose(later), (false, Timing::Steady));
            a.record(false, Timing::Steady, 1.0);
        }
        // A probe of the split that had begun is dropped.
        a.probe_again = 2;
        assert_eq!(a.choose(later), (false, Timing::Steady));
        assert_eq!(a.probe_again, 0);
        // Once the CPUs are free again, the times decide.
        a.crowded = false;
        assert_eq!(a.choose(later), (true, Timing::Steady));
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
