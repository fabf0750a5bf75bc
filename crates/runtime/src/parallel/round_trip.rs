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

/// Round trips made before the clock starts, so that neither thread's first steps (being
/// moved to its CPU, the line's first fetch) are counted.
const WARM_UP_TRIPS: u32 = 200;

/// The longest a measurement may take: a CPU that another program holds answers only when
/// the scheduler gives its thread a turn, so a measurement under load ends here, early.
const DEADLINE: Duration = Duration::from_millis(50);

/// Timed trips between two readings of the clock.
const CHECKPOINT_TRIPS: u32 = 256;

/// Spins between two readings of the clock while waiting: reading it costs tens of
/// nanoseconds on some virtual machines, as much as the trip being timed.
const SPINS_PER_CLOCK: u32 = 1024;

/// The mean time of a round trip of a cache line between the first two CPUs this process may
/// run on, each end a thread pinned to its CPU; `None` with fewer than two CPUs, where a
/// thread cannot be started or pinned, or where no trip was timed before `DEADLINE`.
pub fn cpu_round_trip() -> Option<Duration> {
    let cpus = super::pinning::allowed_cpus();
    let (&first, &second) = (cpus.first()?, cpus.get(1)?);
    // The line the two ends pass back and forth: the far end answers each odd value with the
    // next even one. `u32::MAX` means the far end could not be pinned.
    let turn = AtomicU32::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let far = std::thread::Builder::new()
            .spawn_scoped(s, || {
                if !super::pinning::pin_to(second) {
                    turn.store(u32::MAX, Ordering::Release);
                    return;
                }
                while !stop.load(Ordering::Relaxed) {
                    let seen = turn.load(Ordering::Acquire);
                    if seen % 2 == 1 && seen != u32::MAX {
                        turn.store(seen + 1, Ordering::Release);
                    } else {
                        std::hint::spin_loop();
                    }
                }
            })
            .ok()?;
        let trip = std::thread::Builder::new()
            .spawn_scoped(s, || time_trips(first, &turn))
            .ok()
            .and_then(|near| near.join().ok().flatten());
        stop.store(true, Ordering::Relaxed);
        let _ = far.join();
        trip
    })
}

/// The near end, on `cpu`: the warm-up trips, then up to [`TRIPS`] timed ones, by the
/// deadline. The mean counts only the trips that came back.
fn time_trips(cpu: usize, turn: &AtomicU32) -> Option<Duration> {
    if !super::pinning::pin_to(cpu) {
        return None;
    }
    let start = Instant::now();
    // Sends value `2k + 1` and waits for `2k + 2`; false where the deadline passed first or
    // the far end gave up.
    let trip = |k: u32| {
        let sent = 2 * k + 1;
        turn.store(sent, Ordering::Release);
        let mut spins = 0u32;
        loop {
            match turn.load(Ordering::Acquire) {
                back if back == sent + 1 => return true,
                u32::MAX => return false,
                _ => {}
            }
            spins += 1;
            if spins.is_multiple_of(SPINS_PER_CLOCK) && start.elapsed() > DEADLINE {
                return false;
            }
            std::hint::spin_loop();
        }
    };
    if !(0..WARM_UP_TRIPS).all(trip) {
        return None;
    }
    // The clock is read every [`CHECKPOINT_TRIPS`] trips (each reading would add to the trip
    // it follows), so a run the deadline cuts short counts up to its last checkpoint.
    let clock = Instant::now();
    let mut counted = (0, Duration::ZERO);
    for done in 1..=TRIPS {
        if !trip(WARM_UP_TRIPS + done - 1) {
            break;
        }
        if done % CHECKPOINT_TRIPS == 0 || done == TRIPS {
            counted = (done, clock.elapsed());
        }
    }
    let (trips, elapsed) = counted;
    (trips > 0).then(|| elapsed / trips)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_trip_takes_a_bounded_time_and_none_with_one_cpu() {
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
