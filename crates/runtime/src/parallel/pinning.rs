//! Each worker of a model's pool kept on a CPU of its own.
//!
//! Left to the scheduler, the workers of a pass move between the CPUs, each finding the
//! data of its part of a layer in the other core's cache, and now and then both on one CPU.
//! On the 2-core Zen 4 VM, MobileNetV2 (`cxrm bench --iters 40`, medians of alternating
//! runs of one binary, pinned against `--no-pin`): at `--threads 2` 3.91 ms against 4.06
//! (12 runs each) and, in an earlier build, 3.79 against 4.06 and 3.84 against 4.22 (16);
//! at the default count 3.91 against 4.17, and 3.90 against 4.24 and 4.09 against 3.92.
//! Unpinned, 2 of 12 default runs took 6.8–7.0 ms; pinned, none more than 4.71.
//!
//! Only a pool with one worker for every CPU the process may run on is pinned (the default
//! count, or as many threads given): a smaller one leaves the scheduler the CPUs to choose
//! from, and so does `RuntimeOptions::pin_threads` set to `false` (`--no-pin`), for machines
//! where several such processes run at once.

/// The CPUs this process may run on, in order; empty where that cannot be asked.
pub(super) fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `sched_getaffinity` writes at most the `cpu_set_t` it is given; the
        // `CPU_ISSET` reads stay below `CPU_SETSIZE`.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
                return Vec::new();
            }
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect()
        }
    }
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

/// Keeps the calling thread on `cpu` from now on, and says whether it could; where it could
/// not, the thread stays where it was, which for a pool's worker is only slower.
pub(super) fn pin_to(cpu: usize) -> bool {
    #[cfg(target_os = "linux")]
    {
        if cpu >= libc::CPU_SETSIZE as usize {
            return false;
        }
        // SAFETY: `cpu` is below `CPU_SETSIZE`; `sched_setaffinity` reads the set it is
        // given.
        unsafe {
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one) == 0
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = cpu;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_thread_runs_only_on_its_cpu() {
        let allowed = allowed_cpus();
        if cfg!(not(target_os = "linux")) || allowed.is_empty() {
            return;
        }
        let cpu = *allowed.last().expect("a CPU");
        let seen = std::thread::spawn(move || {
            assert!(pin_to(cpu));
            allowed_cpus()
        })
        .join()
        .expect("the thread ran");
        assert_eq!(seen, vec![cpu]);
        // The spawning thread keeps its own CPUs.
        assert_eq!(allowed_cpus(), allowed);
    }
}
