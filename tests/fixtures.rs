//! Golden files: the committed fixtures must be exactly what the generator in `common` builds,
//! every valid one must decode to its JSON, every invalid one must fail with its listed error.

mod common;

use cxrm::{Cxrm, ErrorCode};
use serde_json::{Value as Json, json};
use std::fs;

fn read(path: &std::path::Path) -> Vec<u8> {
    fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e} (regenerate with CXRM_REGEN=1)", path.display()))
}

/// Run `CXRM_REGEN=1 cargo test --test fixtures regenerate -- --ignored` after an intended
/// format change, then review the diff of `fixtures/`.
#[test]
#[ignore]
fn regenerate() {
    if std::env::var_os("CXRM_REGEN").is_none() {
        eprintln!("set CXRM_REGEN=1 to rewrite fixtures/");
        return;
    }
    let dir = common::fixtures_dir();
    fs::create_dir_all(dir.join("valid")).unwrap();
    fs::create_dir_all(dir.join("invalid")).unwrap();
    for f in common::valid() {
        fs::write(dir.join(format!("valid/{}.cxrm", f.name)), &f.bytes).unwrap();
        let expected = common::expected_json(&f.bytes);
        fs::write(
            dir.join(format!("valid/{}.json", f.name)),
            serde_json::to_string_pretty(&expected).unwrap() + "\n",
        )
        .unwrap();
    }
    let mut listing = serde_json::Map::new();
    for f in common::invalid() {
        fs::write(dir.join(format!("invalid/{}.cxrm", f.name)), &f.bytes).unwrap();
        let (field, offset) = rust_error(&f.bytes, f.stage)
            .map(|e| (e.field, e.offset))
            .unwrap_or_default();
        listing.insert(
            f.name.to_string(),
            json!({"error": f.code, "stage": f.stage, "why": f.why, "field": field, "offset": offset}),
        );
    }
    fs::write(
        dir.join("invalid/expected.json"),
        serde_json::to_string_pretty(&Json::Object(listing)).unwrap() + "\n",
    )
    .unwrap();
}

/// The error the Rust reader reports at `stage` (`open` or `verify`).
fn rust_error(bytes: &[u8], stage: &str) -> Option<cxrm::FormatError> {
    let result = Cxrm::parse(bytes).and_then(|f| {
        if stage == "verify" {
            f.verify().map(|_| ())
        } else {
            Ok(())
        }
    });
    match result {
        Err(cxrm::Error::Format(e)) => Some(e),
        _ => None,
    }
}

#[test]
fn valid_fixtures_are_reproduced_byte_for_byte() {
    let dir = common::fixtures_dir().join("valid");
    for f in common::valid() {
        let committed = read(&dir.join(format!("{}.cxrm", f.name)));
        assert!(
            committed == f.bytes,
            "fixtures/valid/{}.cxrm differs from what the writer produces now",
            f.name
        );
    }
}

#[test]
fn valid_fixtures_decode_to_their_expected_values() {
    let dir = common::fixtures_dir().join("valid");
    for f in common::valid() {
        let bytes = read(&dir.join(format!("{}.cxrm", f.name)));
        let expected: Json = serde_json::from_str(
            &String::from_utf8(read(&dir.join(format!("{}.json", f.name)))).unwrap(),
        )
        .unwrap();
        assert_eq!(
            common::expected_json(&bytes),
            expected,
            "fixtures/valid/{}",
            f.name
        );
        Cxrm::parse(&bytes).unwrap().verify().unwrap();
    }
}

#[test]
fn invalid_fixtures_fail_with_their_listed_error() {
    let dir = common::fixtures_dir().join("invalid");
    let listing: Json = serde_json::from_slice(&read(&dir.join("expected.json"))).unwrap();
    let listing = listing.as_object().unwrap();
    let generated = common::invalid();
    assert_eq!(listing.len(), generated.len());
    for f in generated {
        let bytes = read(&dir.join(format!("{}.cxrm", f.name)));
        assert!(
            bytes == f.bytes,
            "fixtures/invalid/{}.cxrm differs from its generator",
            f.name
        );
        let want = &listing[f.name];
        let stage = want["stage"].as_str().unwrap();
        if stage == "verify" {
            assert!(
                Cxrm::parse(&bytes).is_ok(),
                "{} must open and fail only in verify",
                f.name
            );
        }
        let err = rust_error(&bytes, stage).unwrap_or_else(|| panic!("{} did not fail", f.name));
        assert_eq!(err.code.as_str(), want["error"], "{}: {err}", f.name);
        assert_eq!(err.field, want["field"], "{}", f.name);
        assert_eq!(err.offset, want["offset"], "{}", f.name);
    }
}

#[test]
fn every_truncation_of_every_valid_fixture_is_an_error() {
    for f in common::valid() {
        for len in 0..f.bytes.len() {
            let prefix = &f.bytes[..len];
            let result = Cxrm::parse(prefix).and_then(|file| file.verify());
            assert!(
                result.is_err(),
                "{} truncated to {len} bytes was accepted",
                f.name
            );
        }
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    // Header and table are covered by header_crc, payloads by their CRCs, and every other byte
    // is padding that must be zero: no bit of a valid file can change unnoticed.
    for f in common::valid() {
        let mut bytes = f.bytes.clone();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                bytes[i] ^= 1 << bit;
                let result = Cxrm::parse(&bytes).and_then(|file| file.verify());
                assert!(
                    result.is_err(),
                    "{}: flipping bit {bit} of byte {i} went unnoticed",
                    f.name
                );
                bytes[i] ^= 1 << bit;
            }
        }
    }
}

#[test]
fn unknown_encoding_error_names_what_is_missing() {
    let bytes = read(&common::fixtures_dir().join("invalid/unknown_encoding.cxrm"));
    let err = Cxrm::parse(&bytes).err().unwrap();
    assert_eq!(err.code(), Some(ErrorCode::UnknownEncoding));
    let msg = err.to_string();
    assert!(
        msg.contains("stage#42") && msg.contains("implements dense, zstd"),
        "{msg}"
    );
    // inspect-style opening still lists it.
    let opts = cxrm::ReadOptions {
        allow_unknown_encodings: true,
        ..Default::default()
    };
    let file = Cxrm::parse_with(&bytes, &opts).unwrap();
    assert_eq!(file.missing_encodings(), vec!["stage#42"]);
    assert_eq!(
        file.decode("w").unwrap_err().code(),
        Some(ErrorCode::UnknownEncoding)
    );
}
