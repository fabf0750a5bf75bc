//! Arbitrary bytes through the factored decoders (see `cxrm_runtime::fuzzing::factored_payload` for the input layout).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cxrm_runtime::fuzzing::factored_payload(data);
});
