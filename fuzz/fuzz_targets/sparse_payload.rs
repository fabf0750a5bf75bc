//! Arbitrary bytes through one decoder (see `cxrm_runtime::fuzzing::sparse_payload` for the input layout).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cxrm_runtime::fuzzing::sparse_payload(data);
});
