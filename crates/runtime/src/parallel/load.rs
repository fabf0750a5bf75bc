//! How much of the process's CPUs other programs are using, read from the kernel's counters.
//!
//! The default thread count chooses between one thread and a split over every core by timing
//! both ([`super::adaptive::Adaptive`]). Timing alone cannot see one case: on two cores with a
//! CPU-bound program on one of them, a split pass is fast while the scheduler lets the worker
//! run, and the scheduler then takes that time back in one stretch. Traced on the 2-core
//! Zen 4 VM under `yes`, MobileNetV2's split passes took 4.6–6.5 ms (one thread: 6.8–7.4),
//! then about every 20 passes three in a row took 28–88 ms. The median of the last passes,
//! which keeps one noisy pass on an idle machine from deciding, hid those stretches: the
//! default's mean pass was 1.26× that of `--threads 1` (median of 8 alternating runs of
//! 100 passes; up to 1.79×) while its median pass was 0.96×. And a short probe of the split
//! looks fast again, since the stretch comes later.
//!
//! So the default also reads, every [`SAMPLE_EVERY`], how busy the CPUs it may run on were
//! (`/proc/stat`) less what this process used (its CPU clock). Under `yes` that came to
//! 0.78–0.96 of a CPU, in split passes and on one thread alike; on the idle VM, 0.00–0.02.
//! Where other programs leave fewer than [`CROWDED_BELOW`] CPUs to this one, a static
//! split's slowest part runs at a shared core's speed, and single images run on one thread.

use std::time::{Duration, Instant};

/// How often the counters are read. They count in ticks of 10 ms, so a shorter interval
/// would read as a few ticks; one read (about 20 µs on the 2-core VM) every 100 ms is
/// 0.02% of the time.
pub(super) const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Fewer free CPUs than this, and a split over all of them is no faster than one thread: on
/// two CPUs, another program using more than half of one. With more CPUs a busy one slows
/// each split layer's slowest part, but the others still make the split the faster.
pub(super) const CROWDED_BELOW: f64 = 1.5;

/// One CPU's counters: all time, and the time it was not idle.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct CpuTicks {
    pub total: u64,
    pub busy: u64,
}

/// The counters at one moment.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    /// Indexed as [`Meter::cpus`].
    cpus: Vec<CpuTicks>,
    /// This process's CPU time, all threads.
    own: Duration,
}

/// Reads the load of a set of CPUs now and then.
pub(super) struct Meter {
    /// The CPUs this process may run on, in order.
    cpus: Vec<usize>,
    last: Option<Sample>,
    /// `/proc/stat`'s text and the counters of the reading before last, kept so that a
    /// reading allocates nothing once the first has been made.
    text: String,
    spare: Vec<CpuTicks>,
}

impl Meter {
    /// A meter for the CPUs this process may run on, where there are `count` of them and the
    /// kernel's counters can be read. A count set by a cgroup quota rather than by the
    /// affinity is not metered: the CPUs' load then includes other containers' work.
    pub(super) fn new(count: usize, allowed: Vec<usize>) -> Option<Meter> {
        if allowed.len() != count || count < 2 {
            return None;
        }
        let mut meter = Meter {
            cpus: allowed,
            last: None,
            text: String::new(),
            spare: Vec::new(),
        };
        meter.last = Some(meter.sample(Instant::now())?);
        Some(meter)
    }

    /// Whether other programs left this process fewer than [`CROWDED_BELOW`] CPUs since the
    /// last reading: `None` until [`SAMPLE_EVERY`] has passed, or where the counters could
    /// not be read.
    pub(super) fn crowded(&mut self, now: Instant) -> Option<bool> {
        let last = self.last.as_ref()?;
        if now.duration_since(last.at) < SAMPLE_EVERY {
            return None;
        }
        let Some(next) = self.sample(now) else {
            self.last = None;
            return None;
        };
        let last = self.last.replace(next)?;
        let next = self.last.as_ref()?;
        let others = others_load(
            &last.cpus,
            &next.cpus,
            next.own.saturating_sub(last.own),
            next.at.duration_since(last.at),
        );
        self.spare = last.cpus;
        Some(self.cpus.len() as f64 - others < CROWDED_BELOW)
    }

    fn sample(&mut self, at: Instant) -> Option<Sample> {
        let own = process_cpu_time()?;
        read_proc_stat(&mut self.text)?;
        let mut cpus = std::mem::take(&mut self.spare);
        cpus.clear();
        cpus.resize(self.cpus.len(), CpuTicks::default());
        let mut seen = 0;
        for (cpu, ticks) in parse_cpu_lines(&self.text) {
            if let Ok(i) = self.cpus.binary_search(&cpu) {
                cpus[i] = ticks;
                seen += 1;
            }
        }
        (seen == self.cpus.len()).then_some(Sample { at, cpus, own })
    }
}

/// How many CPUs' worth of time programs other than this one used between two readings:
/// each CPU's busy fraction, summed, less this process's CPU time over the wall time.
pub(super) fn others_load(
    before: &[CpuTicks],
    after: &[CpuTicks],
    own: Duration,
    wall: Duration,
) -> f64 {
    let busy: f64 = before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let total = a.total.saturating_sub(b.total);
            let busy = a.busy.saturating_sub(b.busy).min(total);
            if total == 0 {
                0.0
            } else {
                busy as f64 / total as f64
            }
        })
        .sum();
    let own = if wall.is_zero() {
        0.0
    } else {
        own.as_secs_f64() / wall.as_secs_f64()
    };
    (busy - own).max(0.0)
}

/// The per-CPU lines of `/proc/stat` (`cpu0 user nice system idle iowait irq softirq steal
/// …`): busy is everything but idle and iowait. Time the hypervisor gave to another machine
/// (steal) counts as busy: it was not this process's either. The guest columns are already
/// inside user and nice.
pub(super) fn parse_cpu_lines(text: &str) -> impl Iterator<Item = (usize, CpuTicks)> + '_ {
    text.lines().filter_map(|line| {
        let rest = line.strip_prefix("cpu")?;
        let (id, counters) = rest.split_once(' ')?;
        let cpu = id.parse().ok()?;
        let mut columns = counters.split_ascii_whitespace().map(str::parse::<u64>);
        let mut next = || columns.next().and_then(Result::ok);
        let [user, nice, system, idle, iowait] = [next()?, next()?, next()?, next()?, next()?];
        // Older kernels stop before irq, softirq or steal.
        let (irq, softirq, steal) = (
            next().unwrap_or(0),
            next().unwrap_or(0),
            next().unwrap_or(0),
        );
        let idle = idle.saturating_add(iowait);
        let total = [user, nice, system, irq, softirq, steal]
            .into_iter()
            .fold(idle, u64::saturating_add);
        Some((
            cpu,
            CpuTicks {
                total,
                busy: total - idle,
            },
        ))
    })
}

fn read_proc_stat(text: &mut String) -> Option<()> {
    #[cfg(target_os = "linux")]
    {
        use std::io::Read;
        // A kernel file, but bounded all the same: a machine with thousands of CPUs writes
        // a few hundred kilobytes.
        const MAX_BYTES: u64 = 4 << 20;
        text.clear();
        std::fs::File::open("/proc/stat")
            .ok()?
            .take(MAX_BYTES)
            .read_to_string(text)
            .ok()?;
        Some(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = text;
        None
    }
}

/// The CPU time of every thread of this process so far.
fn process_cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `clock_gettime` writes only the `timespec` it is given.
        unsafe {
            let mut t: libc::timespec = std::mem::zeroed();
            if libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) != 0 {
                return None;
            }
            Some(Duration::new(
                u64::try_from(t.tv_sec).ok()?,
                u32::try_from(t.tv_nsec).ok()?,
            ))
        }
    }
    #[cfg(not(target_os = "linux"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  8628388 0 728460 8749513 34617 0 4660 94833 0 0
cpu0 3783659 0 332503 4944670 9986 0 522 47688 0 0
cpu1 4844729 0 395956 3804842 24631 0 4138 47144 0 0
intr 123 4 5
cpu2 10 20 30 40
ctxt 999
";

    #[test]
    fn per_cpu_lines_count_idle_and_iowait_as_free_and_the_rest_as_busy() {
        let cpus: Vec<_> = parse_cpu_lines(STAT).collect();
        assert_eq!(
            cpus.len(),
            2,
            "the summary line and short lines are skipped"
        );
        let (cpu, ticks) = cpus[0];
        assert_eq!(cpu, 0);
        let idle = 4944670 + 9986;
        assert_eq!(ticks.busy, 3783659 + 332503 + 522 + 47688);
        assert_eq!(ticks.total, ticks.busy + idle);
        assert_eq!(cpus[1].0, 1);
    }

    fn ticks(total: u64, busy: u64) -> CpuTicks {
        CpuTicks { total, busy }
    }

    #[test]
    fn another_programs_load_is_the_busy_time_this_process_did_not_use() {
        let second = Duration::from_secs(1);
        let before = [ticks(1000, 500), ticks(1000, 500)];
        // Both CPUs busy all the time, this process on one of them: one CPU to others.
        let after = [ticks(1100, 600), ticks(1100, 600)];
        let load = others_load(&before, &after, second, second);
        assert!((load - 1.0).abs() < 1e-9, "{load}");
        // This process alone keeping both busy: nobody else.
        assert_eq!(others_load(&before, &after, 2 * second, second), 0.0);
        // Idle CPUs.
        let idle = [ticks(1100, 500), ticks(1100, 510)];
        assert!((others_load(&before, &idle, Duration::ZERO, second) - 0.1).abs() < 1e-9);
        // Counters that did not move, or went back, count as no load.
        assert_eq!(others_load(&after, &before, Duration::ZERO, second), 0.0);
        assert_eq!(
            others_load(&before, &before, Duration::ZERO, Duration::ZERO),
            0.0
        );
    }

    #[test]
    fn a_quota_count_or_a_single_cpu_is_not_metered() {
        assert!(Meter::new(2, vec![0, 1, 2, 3]).is_none());
        assert!(Meter::new(1, vec![0]).is_none());
    }

    #[test]
    fn busy_programs_on_every_cpu_read_as_crowded() {
        let cpus = super::super::pinning::allowed_cpus();
        // A busy loop per CPU, so that they hold at least half of them even while the other
        // tests keep this process busy; on a large machine that would be a heavy test.
        if !(2..=4).contains(&cpus.len()) {
            return;
        }
        let Some(mut meter) = Meter::new(cpus.len(), cpus.clone()) else {
            return;
        };
        let spin = || {
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
        };
        let Ok(mut hogs) = cpus.iter().map(|_| spin()).collect::<Result<Vec<_>, _>>() else {
            return;
        };
        // A reading that starts once the loops run, then one over 300 ms of them.
        std::thread::sleep(SAMPLE_EVERY);
        meter.crowded(Instant::now());
        std::thread::sleep(3 * SAMPLE_EVERY);
        let crowded = meter.crowded(Instant::now());
        for hog in &mut hogs {
            let _ = hog.kill();
            let _ = hog.wait();
        }
        assert_eq!(crowded, Some(true));
    }

    #[test]
    fn the_meter_waits_for_enough_ticks_before_it_answers() {
        let cpus = super::super::pinning::allowed_cpus();
        let Some(mut meter) = Meter::new(cpus.len(), cpus) else {
            return;
        };
        let start = meter.last.as_ref().map(|s| s.at).expect("a first reading");
        assert_eq!(meter.crowded(start + SAMPLE_EVERY / 2), None);
        assert!(meter.crowded(start + SAMPLE_EVERY).is_some());
    }
}
