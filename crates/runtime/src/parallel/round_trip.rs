//! How far apart two of the process's CPUs are: the time for a cache line to go from one to
//! the other and back.
//!
//! A split layer's parts meet in the caches: each thread reads what the other wrote in the
//! layer before. On a 2-core virtual machine the host sometimes runs the two virtual CPUs on
//! different dies, and then a line takes about five times as long to cross (a round trip of
//! 330–400 ns against 50–100 ns on the Zen 4 VM). Two-thread passes of Xception then took
//! 25–28 ms instead of 19.5–20; one thread's did not change. So `cxrm bench` reports this
//! time beside its own, to tell that state of the host from a change in the code.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Round trips timed: a few milliseconds where the CPUs are far apart.
const TRIPS: u32 = 10_000;

/// The longest a measurement may take: a CPU that another program holds answers only when
/// the scheduler gives its thread a turn, so a measurement under load ends here, early.
const DEADLINE: Duration = Duration::from_millis(50);

/// The mean time of a round trip of a cache line between the first two CPUs this process may
/// run on, each end a thread pinned to its CPU; `None` with fewer than two CPUs, where
/// threads cannot be pinned, or where not one trip finished before [`DEADLINE`].
pub fn cpu_round_trip() -> Option<Duration> {
    let cpus = super::pinning::allowed_cpus();
    let (&first, &second) = (cpus.first()?, cpus.get(1)?);
    // The line the two ends pass back and forth: odd values are the far end's turn.
    let turn = AtomicU32::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let far = s.spawn(|| {
            super::pinning::pin_to(second);
            let mut expect = 1;
            while !stop.load(Ordering::Relaxed) {
                if turn.load(Ordering::Acquire) == expect {
                    turn.store(expect + 1, Ordering::Release);
                    expect += 2;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let near = s.spawn(|| {
            super::pinning::pin_to(first);
            let start = Instant::now();
            let mut trips = 0;
            'trips: while trips < TRIPS {
                let sent = 2 * trips + 1;
                turn.store(sent, Ordering::Release);
                while turn.load(Ordering::Acquire) != sent + 1 {
                    if start.elapsed() > DEADLINE {
                        break 'trips;
                    }
                    std::hint::spin_loop();
                }
                trips += 1;
            }
            let elapsed = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            (trips > 0).then(|| elapsed / trips)
        });
        let mean = near.join().ok().flatten();
        stop.store(true, Ordering::Relaxed);
        let _ = far.join();
        mean
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_is_timed_where_two_cpus_are_allowed() {
        let cpus = super::super::pinning::allowed_cpus();
        let start = Instant::now();
        let trip = cpu_round_trip();
        // Bounded even where another program holds a CPU (a test run's other tests).
        assert!(start.elapsed() < DEADLINE * 20);
        if cpus.len() < 2 {
            assert_eq!(trip, None);
        }
        if let Some(trip) = trip {
            assert!(trip > Duration::ZERO && trip <= DEADLINE);
        }
    }
}
