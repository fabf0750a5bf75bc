//! Arbitrary bytes through the MIRACLE decoder (see `cxrm_format::fuzzing::miracle_payload` for the input layout).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cxrm_runtime::fuzzing::miracle_payload(data);
});
