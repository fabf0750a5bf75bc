//! Replays every saved fuzz input (the seed corpus, the fixtures, and each past crash kept under
//! `fuzz/regressions/`) through the same entry point the fuzzer uses. A crash that was fixed
//! stays fixed.

use std::path::Path;

fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !p.ends_with(".gitkeep"))
        .collect()
}

#[test]
fn saved_fuzz_inputs_do_not_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in [
        "fuzz/regressions/open_verify",
        "fuzz/corpus/open_verify",
        "fixtures/valid",
        "fixtures/invalid",
    ] {
        for path in files_in(&root.join(dir)) {
            let data = std::fs::read(&path).unwrap();
            let valid = cxrm::fuzzing::open_and_verify(&data);
            if dir == "fixtures/valid" && path.extension().is_some_and(|e| e == "cxrm") {
                assert!(valid, "{} must verify", path.display());
            }
            n += 1;
        }
    }
    assert!(n > 30, "expected the fixtures at least, replayed {n}");
}
