#![no_main]
//! Any bytes given to `cxrm import` as a Keras 3 zip (config.json + HDF5 weights): an error or
//! a model, never a panic, hang or unbounded allocation.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(imported) = cxrm_compress::interop::keras::import(data, None) {
        let _ = imported.into_writer().and_then(|w| w.to_bytes());
    }
});
