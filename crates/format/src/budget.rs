//! The memory budget: how much a reader may allocate for one tensor or one pass, whatever the
//! file asks for. A file of a few hundred bytes can validly describe a tensor of 2^36 bytes;
//! decoding it must fail with a message, never abort the process. The budget defaults to what
//! the machine can give (available memory, capped by the process's address-space limit and
//! its cgroup's memory limit) and can be lowered or raised by the caller.

use crate::error::{Error, Result};
use std::sync::OnceLock;

/// A memory budget in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget(pub u64);

static MACHINE: OnceLock<u64> = OnceLock::new();

/// Used when the machine does not say what it can give: the spec's decoded-size limit.
const FALLBACK: u64 = 1 << 36;

impl Default for Budget {
    fn default() -> Self {
        Budget::machine()
    }
}

impl Budget {
    /// What this machine can give a process now, measured once; or what
    /// [`Budget::set_process_default`] set.
    pub fn machine() -> Budget {
        Budget(*MACHINE.get_or_init(measure))
    }

    /// Make `bytes` the default budget of this process (a command-line `--max-memory`).
    /// Takes effect only before the first [`Budget::machine`] call.
    pub fn set_process_default(bytes: u64) {
        let _ = MACHINE.set(bytes);
    }

    /// Fail unless `bytes` fit the budget; `what` names what needs them.
    pub fn check(&self, what: impl FnOnce() -> String, bytes: u64) -> Result<()> {
        if bytes > self.0 {
            return Err(Error::OverBudget {
                what: what(),
                needed: bytes,
                budget: self.0,
            });
        }
        Ok(())
    }

    /// `len` zero bytes, or an error if they are over the budget or the allocator refuses them.
    pub fn zeroed(&self, what: impl Fn() -> String, len: u64) -> Result<Vec<u8>> {
        self.check(&what, len)?;
        let mut v = Vec::new();
        v.try_reserve_exact(len as usize)
            .map_err(|_| Error::OverBudget {
                what: what(),
                needed: len,
                budget: self.0,
            })?;
        v.resize(len as usize, 0);
        Ok(v)
    }
}

/// Parse a size such as `512M`, `4G` or `1048576` (bytes; K, M, G, T are powers of 1024).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, shift) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 10),
        'm' | 'M' => (&text[..text.len() - 1], 20),
        'g' | 'G' => (&text[..text.len() - 1], 30),
        't' | 'T' => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn measure() -> u64 {
    let available = meminfo_available();
    // Half the address-space limit: the mapped file, the binary and the allocator's own
    // overhead share it with what the budget covers.
    let address_space = address_space_limit().map(|l| l / 2);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    [available, address_space, cgroup]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(FALLBACK)
}

fn meminfo_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

fn address_space_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max address space"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_the_budget_refuses_what_is_over_it() {
        assert_eq!(parse_size("4G"), Some(4 << 30));
        assert_eq!(parse_size("512m"), Some(512 << 20));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("lots"), None);
        let b = Budget(1000);
        assert!(b.check(|| "x".into(), 1000).is_ok());
        let e = b
            .zeroed(|| "tensor[0]".into(), 1001)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tensor[0] needs 1001 bytes") && e.contains("1000"),
            "{e}"
        );
        assert!(Budget::machine().0 > 1 << 20);
    }
}
