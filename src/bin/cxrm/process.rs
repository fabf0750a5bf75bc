//! What the `cxrm` process sets up for every command: argument checks that bound its
//! resources (threads, memory), the SIGBUS handler for mapped inputs, and the allocator's
//! setting while a model loads.

/// A thread count: more than 8 per core only adds waiting, and a mistyped 100000 would spend
/// a minute starting threads before doing anything.
pub fn parse_threads(text: &str) -> Result<usize, String> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let max = 8 * cores;
    match text.parse::<usize>() {
        Ok(n) if n <= max => Ok(n),
        Ok(n) => Err(format!(
            "{n} threads on {cores} core(s): at most {max} (0 means one per core)"
        )),
        Err(e) => Err(e.to_string()),
    }
}

pub fn parse_memory(text: &str) -> Result<u64, String> {
    cxrm::format::budget::parse_size(text)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("{text:?} is not a size such as 512M, 4G or 1000000"))
}

/// A mapped input truncated by another process while cxrm reads it raises SIGBUS on the next
/// touch of a lost page. Report it as the I/O error it is, with exit status 2, instead of
/// dying by the signal. Only async-signal-safe calls (write, _exit) run in the handler.
#[cfg(unix)]
pub fn on_sigbus_exit_2() {
    extern "C" fn handler(_: libc::c_int) {
        const MSG: &[u8] =
            b"cxrm: an input file changed size while it was being read (truncated while mapped)\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe; MSG is a static buffer.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(2);
        }
    }
    // SAFETY: installs a handler for SIGBUS before any other thread exists; the handler only
    // makes async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as *const () as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}

/// Runs `load` (a model's loading) with glibc's allocator serving every block of 128 KiB or
/// more by a mapping of its own, returned to the system when it is freed; afterwards such
/// mappings start at 32 MiB.
///
/// By default that threshold rises to the size of each large block freed, and later blocks
/// below it come from the heap, whose freed middle stays resident. Loading decodes weights
/// through large temporary buffers, so the heap kept them: on the pruned Xception (30% kept,
/// 59.5 MB of weights as the model keeps them), peak RSS under `cxrm bench` was 89,696 KiB
/// by default, 88,716 with a threshold of 1 MiB and 76,600 (78.4 MB) with 128 KiB, under
/// the memory bound of docs/performance/memory.md (78.8 MB). The cost is fresh pages for each
/// block: loading took 234–290 ms against 114–139 by default (median of five loads); the
/// dense models loaded in the same time either way. A pass, unlike a load, should reuse its blocks: the `gemm` crate
/// (the products where the CPU lacks AVX-512) allocates its packing buffers on every call,
/// and mapping each anew would fault in its pages every time, so after loading the threshold
/// is raised to glibc's own most.
pub fn loading<T>(load: impl FnOnce() -> T) -> T {
    set_large_block_threshold(128 << 10);
    let loaded = load();
    set_large_block_threshold(32 << 20);
    loaded
}

fn set_large_block_threshold(bytes: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter, under the allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, bytes);
    }
    let _ = bytes;
}
