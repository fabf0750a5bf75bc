//! Entry points shared by the fuzz targets (`fuzz/`) and the regression tests that replay
//! their corpora (`tests/fuzz_regressions.rs`), so both exercise exactly the same code.

use crate::container::reader::{Cxrm, ReadOptions};

/// Open arbitrary bytes as a file and, if that succeeds, run every check and decode there is.
/// Returns whether the file was fully valid.
pub fn open_and_verify(data: &[u8]) -> bool {
    // The inspect path: opens files with unknown encodings and reads metadata and graph.
    let lenient = ReadOptions {
        allow_unknown_encodings: true,
        ..Default::default()
    };
    if let Ok(file) = Cxrm::parse_with(data, &lenient) {
        let _ = file.metadata();
        let _ = file.graph();
        for t in file.tensors() {
            let _ = file.decode_record(t);
            let _ = file.view(t.name);
        }
    }
    match Cxrm::parse(data) {
        Ok(file) => file.verify().is_ok(),
        Err(_) => false,
    }
}
