//! The `cxrm` binary end to end: exit statuses, messages, JSON fields, pack/convert round trip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cxrm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cxrm"))
        .args(args)
        .output()
        .expect("runs cxrm")
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(rel)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn verify_exit_statuses() {
    for name in ["tiny", "dtypes", "zstd", "model", "forward_compat", "empty"] {
        let out = cxrm(&[
            "verify",
            fixture(&format!("valid/{name}.cxrm")).to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out));
    }
    let listing: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("invalid/expected.json")).unwrap()).unwrap();
    for (name, want) in listing.as_object().unwrap() {
        let out = cxrm(&[
            "verify",
            fixture(&format!("invalid/{name}.cxrm")).to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        let msg = text(&out);
        let code = want["error"].as_str().unwrap();
        assert!(
            msg.contains(code) && msg.contains("at byte") && msg.contains("field"),
            "{name}: {msg}"
        );
    }
    assert_eq!(
        cxrm(&["verify", "/no/such/file.cxrm"]).status.code(),
        Some(2)
    );
    assert_eq!(cxrm(&["verify"]).status.code(), Some(2));
    assert_eq!(cxrm(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn verify_rejects_every_truncation_with_status_1() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["tiny", "model"] {
        let bytes = std::fs::read(fixture(&format!("valid/{name}.cxrm"))).unwrap();
        let path = dir.path().join("cut.cxrm");
        for len in 0..bytes.len() {
            std::fs::write(&path, &bytes[..len]).unwrap();
            let out = cxrm(&["verify", path.to_str().unwrap()]);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{name} cut to {len}: {}",
                text(&out)
            );
            assert!(!out.stderr.is_empty());
        }
    }
}

#[test]
fn inspect_json_has_the_documented_fields() {
    let out = cxrm(&[
        "inspect",
        "--json",
        fixture("valid/model.cxrm").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["version"], "1.0");
    assert_eq!(doc["metadata"]["model.name"], "lenet-tiny");
    let t = &doc["tensors"][0];
    assert_eq!(t["name"], "conv1.weight");
    assert_eq!(t["shape"], serde_json::json!([4, 1, 3, 3]));
    assert_eq!(t["dtype"], "f32");
    assert_eq!(t["encoding"], serde_json::json!(["dense"]));
    assert_eq!(t["stored_bytes"], 144);
    assert_eq!(t["bits_per_weight"], 32.0);
    let totals = &doc["totals"];
    assert_eq!(totals["params"], 36 + 4 + 360 + 10);
    assert_eq!(totals["stored_bytes"], 4 * 410);
    assert_eq!(totals["f32_bytes"], 4 * 410);
    assert_eq!(totals["ratio"], 1.0);
    assert_eq!(doc["graph"].as_array().unwrap().len(), 6);
}

#[test]
fn inspect_lists_files_it_cannot_decode_and_escapes_control_characters() {
    let out = cxrm(&[
        "inspect",
        fixture("invalid/unknown_encoding.cxrm").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("cannot decode: stage#42"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evil.cxrm");
    let mut w = cxrm::Writer::new();
    w.set_metadata(
        "note\u{1b}]0;pwned\u{7}",
        cxrm::Value::String("\u{1b}[2J".into()),
    );
    w.add_dense("\u{1b}[31mred", cxrm::DType::U8, &[1], vec![1u8])
        .unwrap();
    w.write(&path).unwrap();
    let out = cxrm(&["inspect", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !out.stdout.contains(&0x1b),
        "raw escape byte reached the terminal"
    );
    assert!(text(&out).contains("\\u{1b}[31mred"));
}

#[test]
fn pack_then_convert_round_trips_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("in.safetensors");
    let w1: Vec<u8> = (0..400u32)
        .flat_map(|i| ((i % 7) as f32 * 0.5).to_le_bytes())
        .collect();
    let b1: Vec<u8> = (0..4u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let views = vec![
        (
            "fc.weight",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4, 100], &w1)
                .unwrap(),
        ),
        (
            "fc.bias",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &b1).unwrap(),
        ),
    ];
    let meta = std::collections::HashMap::from([("source".to_string(), "test".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), &st).unwrap();
    let graph = dir.path().join("graph.json");
    std::fs::write(&graph, r#"{"nodes": [{"name": "fc", "op": "dense", "inputs": ["input"], "weights": ["fc.weight", "fc.bias"]}],
                               "metadata": {"input.shape": [1, 10, 10]}}"#).unwrap();
    let out_cxrm = dir.path().join("m.cxrm");
    let out = cxrm(&[
        "pack",
        st.to_str().unwrap(),
        "-o",
        out_cxrm.to_str().unwrap(),
        "--graph",
        graph.to_str().unwrap(),
        "--zstd",
        "19",
        "--meta",
        "model.name=fc-test",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = cxrm(&["verify", out_cxrm.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let mapped = cxrm::Mapped::open(&out_cxrm).unwrap();
    let file = mapped.parse().unwrap();
    assert_eq!(file.tensor("fc.weight").unwrap().chain_name(), "dense+zstd");
    let meta = file.metadata().unwrap();
    assert_eq!(
        cxrm::container::value::get(&meta, "model.name"),
        Some(&cxrm::Value::String("fc-test".into()))
    );
    assert_eq!(
        cxrm::container::value::get(&meta, "source"),
        Some(&cxrm::Value::String("test".into()))
    );
    assert_eq!(
        cxrm::container::value::get(&meta, "input.shape"),
        Some(&cxrm::Value::ints([1, 10, 10]))
    );
    assert_eq!(
        file.graph().unwrap().unwrap().nodes[0].weights,
        ["fc.weight", "fc.bias"]
    );

    let back = dir.path().join("back.safetensors");
    let out = cxrm(&[
        "convert",
        out_cxrm.to_str().unwrap(),
        "-o",
        back.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bytes = std::fs::read(&back).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("fc.weight").unwrap().data(), &w1[..]);
    assert_eq!(st.tensor("fc.bias").unwrap().data(), &b1[..]);
    assert_eq!(st.tensor("fc.weight").unwrap().shape(), &[4, 100]);
}

#[test]
fn pack_reports_bad_inputs_as_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"definitely not safetensors").unwrap();
    let out = cxrm(&[
        "pack",
        junk.to_str().unwrap(),
        "-o",
        dir.path().join("x.cxrm").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!dir.path().join("x.cxrm").exists());
    let out = cxrm(&[
        "pack",
        junk.to_str().unwrap(),
        "-o",
        "x.cxrm",
        "--zstd",
        "99",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn every_subcommand_help_shows_an_example() {
    for sub in ["inspect", "verify", "pack", "convert"] {
        let out = cxrm(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        assert!(
            text(&out).contains("Example"),
            "{sub} --help has no example"
        );
    }
}
