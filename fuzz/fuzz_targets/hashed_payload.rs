//! Arbitrary bytes through the hashed MIRACLE decoder (see `cxrm_format::fuzzing::hashed_payload` for the input layout).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cxrm_runtime::fuzzing::hashed_payload(data);
});
