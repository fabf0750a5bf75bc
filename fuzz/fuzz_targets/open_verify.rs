//! Arbitrary bytes as a .cxrm file: open, then full verification. Any panic, out-of-bounds
//! access or runaway allocation is a bug; errors are the expected outcome.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cxrm_runtime::fuzzing::open_and_verify(data);
});
