//! Arbitrary bytes through one decoder (see `cxrm::fuzzing::codebook_payload` for the input layout).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cxrm::fuzzing::codebook_payload(data);
});
