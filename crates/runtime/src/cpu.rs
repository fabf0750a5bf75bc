//! The instruction sets the runtime's kernels may use: what this CPU has, held below a cap
//! that the environment can set.
//!
//! Every kernel choice asks here rather than the CPU, so that `CXRM_MAX_ISA` can keep the
//! runtime below what the CPU offers: `avx2` leaves out the AVX-512 kernels, `portable` every
//! kernel written with intrinsics, and `avx512` (or the variable unset) leaves the choice to
//! the CPU. (The portable loops that `multiversion` compiles for several targets, and the
//! `gemm` crate, still pick their own copies for the CPU: the cap does not make an AVX-512
//! machine into one without FMA.)
//!
//! Each level's kernels give the same bits as the others', which the tests check on the CPU
//! they run on; with the cap, one AVX-512 machine runs the tests of all three levels
//! (`.ci/run` does), where otherwise a CI machine tests only the paths of the CPU it was
//! given. A benchmark can also time one model at each level in one run. The cap is read once,
//! at the first kernel choice; a value it does not know leaves the choice to the CPU, and
//! [`cap_error`] names it.

/// The levels of instruction sets the kernels are written for, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The portable loops (compiled for the target's baseline, with POPCNT where it has it).
    Portable,
    /// AVX2 with FMA.
    Avx2,
    /// AVX-512F (with AVX2 and FMA, which every AVX-512 CPU has).
    Avx512,
}

impl Level {
    /// The name `CXRM_MAX_ISA` takes for this level.
    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// The level a name of [`Level::name`] stands for (any case), if any.
    pub fn from_name(name: &str) -> Option<Level> {
        [Level::Portable, Level::Avx2, Level::Avx512]
            .into_iter()
            .find(|level| level.name().eq_ignore_ascii_case(name.trim()))
    }
}

/// The environment variable that caps the level.
pub const CAP_VARIABLE: &str = "CXRM_MAX_ISA";

/// The level the kernels use: the highest this CPU has, at most the cap. Read once.
pub fn level() -> Level {
    static CHOSEN: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| detected().min(cap()))
}

/// Whether the AVX-512F kernels run.
pub fn avx512f() -> bool {
    level() >= Level::Avx512
}

/// Whether the AVX2-with-FMA kernels can run (on an AVX-512 CPU too: where both have a
/// kernel for a layer, the caller prefers AVX-512's).
pub fn avx2_fma() -> bool {
    level() >= Level::Avx2
}

/// Whether the kernels that need AVX2 and POPCNT but no FMA (the XNOR counts' nibble
/// lookups) run.
pub fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        cap() >= Level::Avx2 && has!("avx2") && has!("popcnt")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether AVX-512's vector popcount (VPOPCNTDQ) runs: the AVX-512 level and the extension.
pub fn avx512_vpopcntdq() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512f() && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The value of `CXRM_MAX_ISA` when it names no level: the runtime then ignores it, and a
/// test or a tool that set it can say so instead of measuring the wrong kernels.
pub fn cap_error() -> Option<String> {
    let value = cap_value()?;
    Level::from_name(&value)
        .is_none()
        .then(|| format!("{CAP_VARIABLE}={value:?} names no level: avx512, avx2 or portable"))
}

/// The value of `CXRM_MAX_ISA`, where it is set and not empty.
fn cap_value() -> Option<String> {
    std::env::var(CAP_VARIABLE)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// The highest level this CPU has.
fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx2") && has!("fma") {
            return Level::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Level::Avx2;
        }
    }
    Level::Portable
}

/// The cap `CXRM_MAX_ISA` sets: [`Level::Avx512`] (none) where it is unset, empty or unknown.
fn cap() -> Level {
    static CAP: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| {
        cap_value()
            .and_then(|value| Level::from_name(&value))
            .unwrap_or(Level::Avx512)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_in_the_environment_names_a_level() {
        // CI sets the cap to run these tests on each level; a misspelt one would quietly test
        // the CPU's own level again.
        assert_eq!(cap_error(), None);
        if let Some(value) = cap_value() {
            assert!(level() <= Level::from_name(&value).unwrap());
        }
    }

    #[test]
    fn the_levels_read_back_from_their_names() {
        for level in [Level::Portable, Level::Avx2, Level::Avx512] {
            assert_eq!(Level::from_name(level.name()), Some(level));
            assert_eq!(Level::from_name(&level.name().to_uppercase()), Some(level));
        }
        assert_eq!(Level::from_name("sse4"), None);
        assert!(Level::Portable < Level::Avx2 && Level::Avx2 < Level::Avx512);
    }

    #[test]
    fn the_kernel_choices_follow_the_level() {
        use crate::kernels::{OwnKernel, own_kernel};
        assert!(level() <= detected() && level() <= cap());
        let product = match level() {
            Level::Avx512 => Some(OwnKernel::Avx512),
            Level::Avx2 => Some(OwnKernel::Avx2),
            Level::Portable => None,
        };
        if std::env::var_os("CXRM_GEMM_CRATE").is_none() {
            assert_eq!(own_kernel(), product);
        }
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(
                crate::kernels::window_max::available(),
                level() == Level::Avx512
            );
            assert_eq!(crate::winograd::available(), product.is_some());
        }
        if cap() == Level::Portable {
            assert!(!avx2() && !avx512_vpopcntdq());
        }
    }
}
