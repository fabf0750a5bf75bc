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
fn inspect_shows_the_ranks_of_factored_tensors() {
    let path = fixture("valid/factored.cxrm");
    let out = cxrm(&["inspect", "--json", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["version"], "1.2");
    let ranks: Vec<&serde_json::Value> = doc["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["ranks"])
        .collect();
    use serde_json::json;
    assert_eq!(
        ranks,
        [
            &json!([2]),
            &json!([1]),
            &json!([2, 2]),
            &json!(null),
            &json!(null)
        ]
    );
    let out = cxrm(&["inspect", path.to_str().unwrap()]);
    assert!(
        text(&out).contains("tucker.f32 tucker rank 2 x 2"),
        "{}",
        text(&out)
    );
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
        cxrm::format::container::value::get(&meta, "model.name"),
        Some(&cxrm::Value::String("fc-test".into()))
    );
    assert_eq!(
        cxrm::format::container::value::get(&meta, "source"),
        Some(&cxrm::Value::String("test".into()))
    );
    assert_eq!(
        cxrm::format::container::value::get(&meta, "input.shape"),
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
    for sub in ["inspect", "verify", "pack", "convert", "import", "export"] {
        let out = cxrm(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        assert!(
            text(&out).contains("Example"),
            "{sub} --help has no example"
        );
    }
}

fn fixture_png(dir: &Path) -> PathBuf {
    let pixels: Vec<u8> = (0..28u32)
        .flat_map(|y| (0..28u32).map(move |x| ((7 * y + 3 * x) % 256) as u8))
        .collect();
    let img = image::GrayImage::from_raw(28, 28, pixels).unwrap();
    let path = dir.join("digit.png");
    img.save(&path).unwrap();
    path
}

/// `cxrm run MODEL IMAGE --json`, which must succeed.
fn run_json(model: &Path, image: &Path) -> serde_json::Value {
    let out = cxrm(&[
        "run",
        model.to_str().unwrap(),
        image.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn trained_fixtures_read_a_real_digit_through_the_cli() {
    let png = fixture("runtime/digit.png");
    for name in ["lenet5_trained", "lenet5_trained_dc"] {
        let doc = run_json(&fixture(&format!("runtime/{name}.cxrm")), &png);
        // MNIST test image 0 is a 7.
        assert_eq!(doc[0]["class"], "7", "{name}: {doc}");
    }
}

#[test]
fn run_classifies_images_with_the_files_own_preprocessing() {
    let dir = tempfile::tempdir().unwrap();
    let png = fixture_png(dir.path());
    let model = fixture("runtime/lenet5.cxrm");
    let doc = run_json(&model, &png);
    let probs: Vec<f64> = doc[0]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(doc[0]["image"], png.to_str().unwrap());
    // The PNG holds the fixture input, so the probabilities are the softmax of its logits.
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("runtime/lenet5.logits.json")).unwrap())
            .unwrap();
    let logits: Vec<f64> = expected["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let m = logits.iter().cloned().fold(f64::MIN, f64::max);
    let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
    for (p, l) in probs.iter().zip(&logits) {
        assert!((p - (l - m).exp() / z).abs() < 1e-5);
    }
    let best = logits
        .iter()
        .enumerate()
        .fold(0, |b, (i, &v)| if v > logits[b] { i } else { b });
    assert_eq!(doc[0]["class"], best.to_string());
    let human = cxrm(&["run", model.to_str().unwrap(), png.to_str().unwrap()]);
    assert!(
        text(&human).contains(&format!(": {best} (p = ")),
        "{}",
        text(&human)
    );

    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not a png").unwrap();
    let out = cxrm(&["run", model.to_str().unwrap(), junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("cannot decode image"), "{}", text(&out));
}

fn write_idx(dir: &Path, n: usize) {
    let mut images = vec![0, 0, 8, 3];
    for d in [n as u32, 28, 28] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    let mut labels = vec![0, 0, 8, 1];
    labels.extend_from_slice(&(n as u32).to_be_bytes());
    for i in 0..n {
        images.extend((0..784).map(|p| ((p * (i + 3)) % 256) as u8));
        labels.push((i % 10) as u8);
    }
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), images).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), labels).unwrap();
}

#[test]
fn eval_reports_accuracy_on_idx_and_folder_data() {
    let dir = tempfile::tempdir().unwrap();
    write_idx(dir.path(), 25);
    let model = fixture("runtime/lenet5.cxrm");
    let out = cxrm(&[
        "eval",
        model.to_str().unwrap(),
        "--data",
        dir.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["n"], 25);
    let acc = doc["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    let confusion: u64 = doc["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(confusion, 25);
    let human = cxrm(&[
        "eval",
        model.to_str().unwrap(),
        "--data",
        dir.path().to_str().unwrap(),
        "--limit",
        "10",
    ]);
    assert!(
        text(&human).contains("accuracy")
            && text(&human).contains("confusion matrix")
            && text(&human).contains("10 images"),
        "{}",
        text(&human)
    );

    // A class-per-folder tree (Kaggle layout: ROOT/test/CLASS/*.png).
    let tree = dir.path().join("tree");
    for c in 0..10 {
        let d = tree.join("test").join(c.to_string());
        std::fs::create_dir_all(&d).unwrap();
        fixture_png(&d);
    }
    let out = cxrm(&[
        "eval",
        model.to_str().unwrap(),
        "--data",
        tree.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["n"], 10);
    assert_eq!(
        doc["accuracy"], 0.1,
        "ten identical images, one per class: exactly one is right"
    );

    let out = cxrm(&["eval", model.to_str().unwrap(), "--data", "/no/such/dir"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bench_reports_load_latency_and_throughput() {
    let out = cxrm(&[
        "bench",
        fixture("runtime/lenet5_dc.cxrm").to_str().unwrap(),
        "--iters",
        "5",
        "--batch",
        "4",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("load")
            && t.contains("batch 1    median")
            && t.contains("images/s")
            && t.contains("dense[sparse]"),
        "{t}"
    );
}

/// `cxrm bench` on `model` with two runs at each batch size, then `extra`.
fn quick_bench<'a>(model: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let model = model.to_str().unwrap();
    [&["bench", model, "--iters", "2", "--batch", "2"][..], extra].concat()
}

#[test]
fn bench_profiles_each_layer_and_each_pass() {
    let model = fixture("runtime/lenet5_dc.cxrm");
    let out = cxrm(&quick_bench(&model, &["--profile", "5", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let profile = &doc["profile"];
    let ms = |key: &str| profile[key].as_f64().unwrap();
    let layers: f64 = profile["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ms"].as_f64().unwrap())
        .sum();
    assert!((ms("total_ms") - layers).abs() <= 1e-9 * layers.max(1.0));
    // Each pass takes at least its layers, so the medians keep that order.
    assert!(ms("pass_layers_ms") > 0.0 && ms("pass_ms") >= ms("pass_layers_ms"));
    let out = cxrm(&quick_bench(&model, &["--profile", "5"]));
    assert!(text(&out).contains("a pass: its layers"), "{}", text(&out));
}

#[test]
fn bench_names_the_instruction_set_the_cap_leaves() {
    // `CXRM_MAX_ISA` holds the kernels at or below a level, and `bench` says which ran; a name
    // it does not know is ignored, with a warning, not an error.
    let model = fixture("runtime/lenet5_dc.cxrm");
    let args = quick_bench(&model, &["--json"]);
    let run = |cap: &str| {
        Command::new(env!("CARGO_BIN_EXE_cxrm"))
            .args(&args)
            .env("CXRM_MAX_ISA", cap)
            .output()
            .expect("runs cxrm")
    };
    let level = |out: &Output| {
        assert_eq!(out.status.code(), Some(0), "{}", text(out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // Before and after the runs; null where fewer than two CPUs can be pinned.
        let trips = doc["cpu_round_trip_ns"].as_array().unwrap();
        assert!(
            trips.len() == 2
                && trips
                    .iter()
                    .all(|t| t.is_null() || t.as_f64().unwrap() > 0.0)
        );
        doc["instruction_set"].as_str().unwrap().to_string()
    };
    assert_eq!(level(&run("portable")), "portable");
    let capped = level(&run("avx2"));
    assert!(capped == "avx2" || capped == "portable", "{capped}");
    let unknown = run("sse9");
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("names no level"),
        "{}",
        text(&unknown)
    );
    assert!(["avx512", "avx2", "portable"].contains(&level(&unknown).as_str()));
}

#[test]
fn runtime_subcommands_help_shows_an_example() {
    for sub in ["run", "eval", "bench"] {
        let out = cxrm(&[sub, "--help"]);
        assert!(text(&out).contains("Example"), "{sub}");
    }
}

/// `train` → `compress` (both methods) → `eval`, through the binary, on the bundled subset.
#[cfg(feature = "train")]
#[test]
fn train_compress_eval_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let data = fixture("data/mnist");
    let data = data.to_str().unwrap();
    let out = cxrm(&[
        "train",
        "--arch",
        "mlp-16",
        "--data",
        data,
        "--limit",
        "600",
        "--epochs",
        "2",
        "--batch",
        "16",
        "-o",
        &p("base.cxrm"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("epoch   2"),
        "progress lines: {}",
        text(&out)
    );

    let out = cxrm(&[
        "compress",
        &p("base.cxrm"),
        "--method",
        "deep-compression",
        "--limit",
        "600",
        "--epochs",
        "1",
        "--prune-steps",
        "1",
        "--quiet",
        "-o",
        &p("dc.cxrm"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let inspect = text(&cxrm(&["inspect", &p("dc.cxrm")]));
    assert!(inspect.contains("sparse+codebook+huffman"), "{inspect}");
    assert!(
        std::fs::metadata(p("dc.cxrm")).unwrap().len() * 5
            < std::fs::metadata(p("base.cxrm")).unwrap().len()
    );

    let out = cxrm(&[
        "compress",
        &p("base.cxrm"),
        "--method",
        "distill",
        "--student",
        "mlp-16",
        "--limit",
        "600",
        "--epochs",
        "2",
        "--quiet",
        "-o",
        &p("student.cxrm"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    for model in ["base.cxrm", "dc.cxrm", "student.cxrm"] {
        let out = cxrm(&["eval", &p(model), "--data", data, "--json"]);
        assert_eq!(out.status.code(), Some(0), "{model}: {}", text(&out));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["n"], 1000);
        assert!(doc["accuracy"].as_f64().unwrap() > 0.2, "{model}: {doc}");
    }

    // Usage errors, not panics: unknown architecture, distill without a student, no data.
    for args in [
        vec!["train", "--arch", "resnet-9000", "-o", "x.cxrm"],
        vec![
            "compress",
            &p("base.cxrm"),
            "--method",
            "distill",
            "-o",
            "x.cxrm",
        ],
        vec![
            "train",
            "--arch",
            "lenet-5",
            "--data",
            "/nonexistent",
            "-o",
            "x.cxrm",
        ],
    ] {
        let out = cxrm(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    }
}

/// A file whose graph this build cannot run: `verify` says it is valid (exit 0), `verify
/// --runnable` says why it cannot run (exit 3); `pack` refuses such a graph before writing.
#[test]
fn verify_runnable_and_pack_refuse_what_the_runtime_cannot_run() {
    use cxrm::{DType, Graph, Node, Value, Writer};
    let dir = tempfile::tempdir().unwrap();
    let w4: Vec<u8> = [0.5f32; 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    for (op, attr, says) in [
        ("depthwise_conv2d", None, "depthwise_conv2d"),
        ("batch_norm", Some("eps"), "unknown attribute \"eps\""),
    ] {
        let mut node = Node::new("n", op, &["input"], &["g", "b", "m", "v"]);
        if let Some(a) = attr {
            node = node.attr(a, Value::Float(1e-3));
        }
        let mut w = Writer::new();
        w.set_metadata("input.shape", Value::ints([4, 1, 1]));
        for t in ["g", "b", "m", "v"] {
            w.add_dense(t, DType::F32, &[4], w4.clone()).unwrap();
        }
        w.set_graph(Graph { nodes: vec![node] });
        let path = dir.path().join(format!("{op}.cxrm"));
        std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
        let out = cxrm(&["verify", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let out = cxrm(&["verify", "--runnable", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        assert!(text(&out).contains(says), "{}", text(&out));
    }
    let graph = dir.path().join("g.json");
    std::fs::write(
        &graph,
        r#"[{"name": "c", "op": "conv2d", "inputs": ["input"], "weights": ["conv1.weight"], "strides": [2, 2]}]"#,
    )
    .unwrap();
    let out_path = dir.path().join("p.cxrm");
    let out = cxrm(&[
        "pack",
        fixture("interop/model.safetensors").to_str().unwrap(),
        "--graph",
        graph.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("unknown attribute \"strides\""),
        "{}",
        text(&out)
    );
    assert!(!out_path.exists());
}

/// `-o -` writes the same bytes to standard output as to a file, and the report goes to
/// standard error.
#[test]
fn dash_writes_the_file_to_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("runtime/lenet5.cxrm");
    let file = dir.path().join("m.safetensors");
    let out = cxrm(&[
        "convert",
        model.to_str().unwrap(),
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let piped = cxrm(&["convert", model.to_str().unwrap(), "-o", "-"]);
    assert!(piped.status.success(), "{}", text(&piped));
    assert_eq!(piped.stdout, std::fs::read(&file).unwrap());
    assert!(String::from_utf8_lossy(&piped.stderr).contains("standard output"));
}

/// `eval` on an image tree: folders matched to `model.classes` by name, a folder naming no
/// class refused, and a truncated JPEG failing the run or, with `--bad-images skip`, listed.
#[test]
fn eval_matches_folders_to_classes_and_reports_truncated_images() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("runtime/lenet5_trained.cxrm");
    let root = dir.path().join("data");
    for class in ["3", "7"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        fixture_png(&root.join(class));
    }
    let img = image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 9 + y * 5) as u8]));
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageLuma8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    std::fs::write(root.join("7/cut.jpg"), &jpeg[..jpeg.len() / 2]).unwrap();
    let data = root.to_str().unwrap();
    let out = cxrm(&["eval", model.to_str().unwrap(), "--data", data]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cut.jpg") && text(&out).contains("truncated"),
        "{}",
        text(&out)
    );
    let out = cxrm(&[
        "eval",
        model.to_str().unwrap(),
        "--data",
        data,
        "--bad-images",
        "skip",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["n"], 2);
    assert_eq!(doc["skipped"].as_array().unwrap().len(), 1);
    std::fs::create_dir_all(root.join("cats")).unwrap();
    let out = cxrm(&[
        "eval",
        model.to_str().unwrap(),
        "--data",
        data,
        "--bad-images",
        "skip",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cats") && text(&out).contains("matches none"),
        "{}",
        text(&out)
    );
}
