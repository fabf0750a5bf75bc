//! The default thread count's choice for single images, between the calling thread alone and every
//! core: each setting timed per multiply-add, the faster one run, the other probed again now and
//! then, and one thread while other programs hold the CPUs.

use super::*;

/// The default count's choice for single images: timed ([`Adaptive`]), and overruled while
/// other programs hold the CPUs ([`load`]).
pub(super) struct Choice {
    pub(super) timing: Adaptive,
    /// The pool's threads, one per CPU the process may run on.
    pub(super) count: usize,
    /// Made at the first pass that could split (most small models never reach one): `None`
    /// inside where the CPUs' load cannot be read.
    pub(super) load: Option<Option<load::Meter>>,
}

impl Choice {
    pub(super) fn new(count: usize) -> Choice {
        Choice {
            timing: Adaptive::default(),
            count,
            load: None,
        }
    }

    pub(super) fn choose(&mut self, now: Instant) -> (bool, Timing) {
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

/// How often the setting not in use is timed again, so that a change of load is noticed: after
/// this long, and at least [`PROBE_PASSES`] passes, so that a probe costs a few percent of the
/// time even when each pass is a long batch (and sooner while the choice is young,
/// [`Adaptive::interval`]).
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);

pub(super) const PROBE_PASSES: u32 = 16;

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
pub(super) struct Adaptive {
    /// Nanoseconds per multiply-add: `[one thread, all threads]`.
    cost: [Recent; 2],
    last_probe: Option<Instant>,
    passes_since_probe: u32,
    /// Calibration passes chosen so far (up to [`CALIBRATION_PASSES`]).
    pub(super) calibration: u32,
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
pub(super) const CALIBRATION_PASSES: u32 = 6;

/// The passes after the calibration before the first probe. The calibration takes about
/// 0.1 s, and the host's other work can slow a few passes of it: on the 2-core VM, one run of
/// `cxrm bench` timed the split's calibration passes at 9.1–9.5 ms against one thread's 7.9
/// and ran its next 16 passes on one thread at 8.0–8.6 ms, until the probe timed the split
/// at 4.9. With four, such a start costs four passes, and an idle machine's first probe of
/// one thread costs one.
pub(super) const FIRST_PROBE_PASSES: u32 = 4;

/// Calibration passes that take the split, the first of them untimed.
pub(super) const CALIBRATION_SPLIT_PASSES: u32 = 4;

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
    pub(super) fn record(&mut self, all: bool, timing: Timing, nanos_per_work: f64) {
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
pub(super) struct Recent {
    times: [f64; RECENT],
    len: usize,
    next: usize,
}

/// Passes in a setting's median: one or two outliers among five leave it where it was.
pub(super) const RECENT: usize = 5;

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
pub(super) enum Timing {
    /// One of the first passes: each setting keeps its fastest.
    Calibration,
    /// The setting not in use, timed again: its time replaces the old one.
    Probe,
    /// The split's second timed pass of a probe: the faster of the two is kept.
    ProbeAgain,
    /// The setting in use: one of its last passes, whose median is its estimate.
    Steady,
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
