//! Replays every saved fuzz input (each target's corpus, every past crash kept under
//! `fuzz/regressions/<target>/`, and for the file-level target the fixtures) through the same
//! entry points the fuzzers use. A crash that was fixed stays fixed.

use std::path::{Path, PathBuf};

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !p.ends_with(".gitkeep"))
        .collect()
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in [
        format!("fuzz/regressions/{target}"),
        format!("fuzz/corpus/{target}"),
    ] {
        for path in files_in(&root.join(dir)) {
            run(&std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    n
}

#[test]
fn open_verify_inputs_do_not_panic() {
    replay("open_verify", |d| {
        cxrm::runtime::fuzzing::open_and_verify(d);
    });
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in ["fixtures/valid", "fixtures/invalid"] {
        for path in files_in(&root.join(dir))
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cxrm"))
        {
            let valid = cxrm::runtime::fuzzing::open_and_verify(&std::fs::read(&path).unwrap());
            assert_eq!(valid, dir == "fixtures/valid", "{}", path.display());
            n += 1;
        }
    }
    assert!(n > 50, "expected the fixtures at least, replayed {n}");
}

#[test]
fn decoder_inputs_do_not_panic() {
    replay("symbol_stream", cxrm::runtime::fuzzing::symbol_stream);
    replay("sparse_payload", cxrm::runtime::fuzzing::sparse_payload);
    replay("codebook_payload", cxrm::runtime::fuzzing::codebook_payload);
    // Its three seeds (one per stage) are kept with the regressions, which git tracks.
    assert!(replay("factored_payload", cxrm::runtime::fuzzing::factored_payload) >= 3);
    assert!(replay("miracle_payload", cxrm::runtime::fuzzing::miracle_payload) >= 1);
    assert!(replay("hashed_payload", cxrm::runtime::fuzzing::hashed_payload) >= 1);
}

/// Any bytes given to `cxrm import`, the fuzzers' inputs and past crashes, end in a model or
/// an error; the reference models of `fixtures/import/` import, and the other files there
/// (JSON, arrays) are refused by both importers without a panic.
#[test]
fn import_inputs_do_not_panic() {
    fn onnx(d: &[u8]) {
        let _ = cxrm::compress::interop::onnx::import(d, None);
    }
    fn keras(d: &[u8]) {
        let _ = cxrm::compress::interop::keras::import(d, None);
    }
    replay("import_onnx", onnx);
    replay("import_keras", keras);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut models = 0;
    for path in files_in(&root.join("fixtures/import")) {
        let bytes = std::fs::read(&path).unwrap();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let onnx_ok = cxrm::compress::interop::onnx::import(&bytes, None).is_ok();
        let keras_ok = cxrm::compress::interop::keras::import(&bytes, None).is_ok();
        assert_eq!(onnx_ok, ext == "onnx", "{}", path.display());
        assert_eq!(keras_ok, ext == "keras", "{}", path.display());
        models += (onnx_ok || keras_ok) as usize;
    }
    assert!(
        models >= 14,
        "expected the 14 reference models, imported {models}"
    );
}
