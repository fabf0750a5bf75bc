//! Crafted hostile inputs against the `cxrm` binary, each run under a 4 GB address-space limit
//! (`ulimit -v`): tiny files that describe huge tensors or activations, outputs that would
//! destroy an input or a device node, FIFOs, absurd thread counts. Every case must end in a
//! clear message and the documented exit status (1 invalid file, 2 usage, resource or I/O),
//! never a panic, abort, signal or hang, and must leave every file it was given intact.

#![cfg(unix)]

use cxrm::format::encoding::lowrank::{self, LowRank};
use cxrm::{DType, Graph, Node, Value, Writer};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run `cxrm ARGS` under a 4 GB address-space limit, killed after 60 s. `CXRM_HOSTILE_BIN`
/// names another binary to run the same cases against (to measure an older build).
fn cxrm_limited(args: &[&str]) -> Output {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let bin = std::env::var("CXRM_HOSTILE_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_cxrm").to_string());
    let script = format!("ulimit -v 4194304; exec '{bin}' {}", quoted.join(" "));
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs sh");
    // Drain both pipes while waiting, so a long output cannot block the child.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pipe.read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("cxrm {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Exit status `code` (not a signal) and a message containing `says`.
fn expect(out: &Output, code: i32, says: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
    assert!(
        text(out).contains(says),
        "wanted {says:?} in: {}",
        text(out)
    );
    assert!(!text(out).contains("panicked"), "{}", text(out));
}

/// A black `side`² greyscale PNG in `dir`.
fn blank_png(dir: &Path, side: u32) -> std::path::PathBuf {
    let png = dir.join("x.png");
    image::GrayImage::new(side, side).save(&png).unwrap();
    png
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A tiny model: global average pool over `input_shape`, then a 2-class dense layer.
fn tiny_model(input_shape: [i64; 3], fc_rows: u64) -> Vec<u8> {
    let c = input_shape[0] as u64;
    let mut w = Writer::new();
    w.set_metadata("input.shape", Value::ints(input_shape));
    let weights: Vec<u8> = vec![0u8; (fc_rows * c * 4) as usize];
    w.add_dense("fc.w", DType::F32, &[fc_rows, c], weights)
        .unwrap();
    w.set_graph(Graph {
        nodes: vec![
            Node::new("gap", "global_avg_pool", &["input"], &[]),
            Node::new("fc", "dense", &["gap"], &["fc.w"]),
        ],
    });
    w.to_bytes().unwrap()
}

#[test]
fn huge_tensors_in_tiny_files_are_over_the_budget_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    // A rank-1 factorisation of a 2^17 × 2^17 matrix: 1 MB of factors, 64 GB rebuilt.
    let n = 1 << 17;
    let lr = LowRank {
        rows: n,
        cols: n,
        rank: 1,
        u: vec![0.5; n],
        v: vec![0.25; n],
    };
    let mut w = Writer::new();
    w.add_tensor(
        "big",
        DType::F32,
        &[n as u64, n as u64],
        lowrank::encode(&lr, DType::F32),
    )
    .unwrap();
    let path = dir.path().join("lowrank.cxrm");
    std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
    for cmd in ["verify", "convert"] {
        let out_file = dir.path().join("out.safetensors");
        let mut args = vec![cmd, s(&path)];
        if cmd == "convert" {
            args.extend(["-o", s(&out_file)]);
        }
        let out = cxrm_limited(&args);
        expect(&out, 2, "more than the memory budget");
        assert!(
            text(&out).contains("\"big\""),
            "names the tensor: {}",
            text(&out)
        );
        assert!(!out_file.exists());
    }
    // inspect reads no payload, so it lists the tensor without decoding it.
    let out = cxrm_limited(&["inspect", s(&path)]);
    expect(&out, 0, "lowrank rank 1");
    // --max-memory lowers the budget for a tensor that would otherwise fit.
    let small = dir.path().join("small.cxrm");
    let mut w = Writer::new();
    let lr = LowRank {
        rows: 512,
        cols: 512,
        rank: 1,
        u: vec![1.0; 512],
        v: vec![1.0; 512],
    };
    w.add_tensor(
        "m",
        DType::F32,
        &[512, 512],
        lowrank::encode(&lr, DType::F32),
    )
    .unwrap();
    std::fs::write(&small, w.to_bytes().unwrap()).unwrap();
    expect(&cxrm_limited(&["verify", s(&small)]), 0, "valid");
    expect(
        &cxrm_limited(&["verify", s(&small), "--max-memory", "1M"]),
        2,
        "more than the memory budget of 1048576 bytes",
    );
}

#[test]
fn huge_inputs_and_activations_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let png = blank_png(dir.path(), 4);
    let path = dir.path().join("wide.cxrm");
    std::fs::write(&path, tiny_model([3, 65536, 65536], 2)).unwrap();
    for args in [
        vec!["run", s(&path), s(&png)],
        vec!["bench", s(&path), "--iters", "1"],
    ] {
        expect(&cxrm_limited(&args), 2, "more than the memory budget");
    }
}

#[test]
fn empty_weights_and_outputs_are_load_errors() {
    let dir = tempfile::tempdir().unwrap();
    let png = blank_png(dir.path(), 4);
    let path = dir.path().join("empty.cxrm");
    std::fs::write(&path, tiny_model([1, 4, 4], 0)).unwrap();
    for json in [false, true] {
        let mut args = vec!["run", s(&path), s(&png)];
        if json {
            args.push("--json");
        }
        expect(&cxrm_limited(&args), 2, "with nothing in it");
    }
}

#[test]
fn outputs_never_replace_inputs_devices_or_read_only_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.cxrm");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/valid/model.cxrm"),
        &model,
    )
    .unwrap();
    let before = std::fs::read(&model).unwrap();
    expect(
        &cxrm_limited(&["convert", s(&model), "-o", s(&model)]),
        2,
        "it is the input",
    );
    let hard = dir.path().join("hard.cxrm");
    std::fs::hard_link(&model, &hard).unwrap();
    expect(
        &cxrm_limited(&["convert", s(&model), "-o", s(&hard)]),
        2,
        "it is the input",
    );
    let st = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/interop/model.safetensors");
    let st_copy = dir.path().join("x.safetensors");
    std::fs::copy(&st, &st_copy).unwrap();
    expect(
        &cxrm_limited(&["pack", s(&st_copy), "-o", s(&st_copy)]),
        2,
        "it is the input",
    );
    assert_eq!(
        std::fs::read(&st_copy).unwrap(),
        std::fs::read(&st).unwrap()
    );
    for dest in ["/dev/null", "."] {
        let out = cxrm_limited(&["pack", s(&st), "-o", dest]);
        assert_eq!(out.status.code(), Some(2), "{dest}: {}", text(&out));
    }
    assert!(
        std::fs::metadata("/dev/null")
            .unwrap()
            .file_type()
            .is_char_device_like()
    );
    let ro = dir.path().join("ro.cxrm");
    std::fs::write(&ro, &before).unwrap();
    let mut p = std::fs::metadata(&ro).unwrap().permissions();
    p.set_readonly(true);
    std::fs::set_permissions(&ro, p).unwrap();
    expect(
        &cxrm_limited(&["pack", s(&st), "-o", s(&ro)]),
        2,
        "read-only",
    );
    expect(
        &cxrm_limited(&["pack", s(&st), "-o", s(&ro), "--force"]),
        0,
        "wrote",
    );
    assert_eq!(std::fs::read(&model).unwrap(), before);
    // convert writes the same bytes every time (metadata in the file's order).
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    expect(
        &cxrm_limited(&["convert", s(&model), "-o", s(&a)]),
        0,
        "wrote",
    );
    expect(
        &cxrm_limited(&["convert", s(&model), "-o", s(&b)]),
        0,
        "wrote",
    );
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn inputs_past_the_limits_never_replace_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.cxrm");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/valid/model.cxrm"),
        &out,
    )
    .unwrap();
    let good = std::fs::read(&out).unwrap();
    let header = br#"{"a":{"dtype":"F32","shape":[0,1125899906842624],"data_offsets":[0,0]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    let input = dir.path().join("huge.safetensors");
    std::fs::write(&input, st).unwrap();
    expect(
        &cxrm_limited(&["pack", s(&input), "-o", s(&out)]),
        2,
        "exceeds the spec's limit",
    );
    assert_eq!(std::fs::read(&out).unwrap(), good);
}

#[test]
fn a_safetensors_header_naming_a_tensor_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let header = br#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let mut st = (header.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(header);
    st.extend_from_slice(&[0u8; 8]);
    let input = dir.path().join("dup.safetensors");
    std::fs::write(&input, st).unwrap();
    let out = dir.path().join("o.cxrm");
    expect(
        &cxrm_limited(&["pack", s(&input), "-o", s(&out)]),
        2,
        "the header names \"a\" twice",
    );
    assert!(!out.exists());
}

#[test]
fn fifos_and_absurd_thread_counts_fail_fast() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.cxrm");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    expect(
        &cxrm_limited(&["verify", s(&fifo)]),
        2,
        "not a regular file",
    );
    expect(
        &cxrm_limited(&["pack", s(&fifo), "-o", s(&dir.path().join("o.cxrm"))]),
        2,
        "not a regular file",
    );
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/runtime/lenet5.cxrm");
    let png = dir.path().join("pipe.png");
    assert!(Command::new("mkfifo").arg(&png).status().unwrap().success());
    expect(
        &cxrm_limited(&["run", s(&model), s(&png)]),
        2,
        "not a regular file",
    );
    let start = Instant::now();
    expect(
        &cxrm_limited(&["bench", s(&model), "--threads", "100000"]),
        2,
        "threads on",
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    expect(
        &cxrm_limited(&["verify", s(dir.path())]),
        2,
        "it is a directory",
    );
}

trait CharDevice {
    fn is_char_device_like(&self) -> bool;
}
impl CharDevice for std::fs::FileType {
    fn is_char_device_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_char_device()
    }
}

/// A mapped input truncated by another process while `verify` reads it: exit 2 with a message,
/// never death by SIGBUS. The truncation races the reader, so the file is large enough for the
/// read to take a while, and the test retries until one run was cut mid-read; whatever the
/// timing, no run may end by a signal.
#[test]
fn a_file_truncated_while_mapped_is_an_io_error_not_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.cxrm");
    let values = vec![0.5f32; 48 << 20];
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut w = Writer::new();
    w.add_dense("w", DType::F32, &[values.len() as u64], bytes)
        .unwrap();
    let file = w.to_bytes().unwrap();
    let mut cut_mid_read = false;
    // From a few milliseconds on: on a fast machine `verify` reads the whole file within 20 ms
    // of its start, and a first cut at 20 ms then never fell mid-read. A cut before the file
    // is mapped is another clean error, and the next attempt waits longer.
    for wait_ms in [2, 5, 10, 15, 20, 30, 40, 55, 70, 90, 115, 145] {
        std::fs::write(&path, &file).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cxrm"))
            .args(["verify", path.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(wait_ms));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let code = out.status.code();
        assert!(
            code.is_some(),
            "verify died by a signal: {:?} {}",
            out.status,
            text(&out)
        );
        if code == Some(2) && text(&out).contains("truncated while") {
            cut_mid_read = true;
            break;
        }
    }
    assert!(
        cut_mid_read,
        "no run was cut mid-read; the test proved nothing"
    );
}

/// A model `input [1, side, side]` → `nodes`, written with no weights but `extra` tensors.
fn graph_model(side: i64, nodes: Vec<Node>, extra: &[(&str, &[u64], Vec<f32>)]) -> Vec<u8> {
    let mut w = Writer::new();
    w.set_metadata("input.shape", Value::ints([1, side, side]));
    for (name, shape, values) in extra {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.add_dense(name, DType::F32, shape, bytes).unwrap();
    }
    w.set_graph(Graph { nodes });
    w.to_bytes().unwrap()
}

#[test]
fn huge_padding_and_many_live_activations_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let png = blank_png(dir.path(), 4);
    // A 1×1 convolution padded by 65,536 on every side: a 131,076² output, 68 GB.
    let padded = dir.path().join("padded.cxrm");
    let conv = Node::new("conv", "conv2d", &["input"], &["w"])
        .attr("padding", Value::ints([65536, 65536, 65536, 65536]));
    let flat = Node::new("flat", "flatten", &["conv"], &[]);
    std::fs::write(
        &padded,
        graph_model(4, vec![conv, flat], &[("w", &[1, 1, 1, 1], vec![1.0])]),
    )
    .unwrap();
    for args in [
        vec!["run", s(&padded), s(&png)],
        vec!["bench", s(&padded), "--iters", "1"],
    ] {
        expect(&cxrm_limited(&args), 2, "more than the memory budget");
    }
    // 32,768 activations of 256 KB each, all alive until a chain of adds consumes them: 8 GB.
    let n = 32_768;
    let mut nodes: Vec<Node> = (0..n)
        .map(|i| Node::new(format!("r{i}"), "relu", &["input"], &[]))
        .collect();
    nodes.push(Node::new("a1", "add", &["r0", "r1"], &[]));
    for i in 2..n {
        let (prev, r) = (format!("a{}", i - 1), format!("r{i}"));
        nodes.push(Node::new(
            format!("a{i}"),
            "add",
            &[prev.as_str(), r.as_str()],
            &[],
        ));
    }
    let last = format!("a{}", n - 1);
    nodes.push(Node::new("flat", "flatten", &[last.as_str()], &[]));
    let live = dir.path().join("live.cxrm");
    std::fs::write(&live, graph_model(256, nodes, &[])).unwrap();
    expect(
        &cxrm_limited(&["run", s(&live), s(&png)]),
        2,
        "more than the memory budget",
    );
}

/// A chain of 65,534 relus and 1×1 max pools and a flatten loads in linear time: the load-time
/// passes once asked, for every node, how many nodes read it, by scanning the whole graph (87 s
/// for this file; the harness calls anything past 60 s a hang), and the arena planner once
/// scanned every placed value for each value (3.8 s for the pools, which do not run in place).
#[test]
fn a_graph_of_65535_nodes_loads_without_quadratic_passes() {
    let dir = tempfile::tempdir().unwrap();
    let png = blank_png(dir.path(), 2);
    let mut nodes = vec![Node::new("r0", "relu", &["input"], &[])];
    for i in 1..65_534 {
        let prev = format!("r{}", i - 1);
        nodes.push(if i % 2 == 1 {
            Node::new(format!("r{i}"), "max_pool2d", &[prev.as_str()], &[])
                .attr("kernel", Value::ints([1, 1]))
                .attr("stride", Value::ints([1, 1]))
        } else {
            Node::new(format!("r{i}"), "relu", &[prev.as_str()], &[])
        });
    }
    nodes.push(Node::new("flat", "flatten", &["r65533"], &[]));
    let chain = dir.path().join("chain.cxrm");
    std::fs::write(&chain, graph_model(2, nodes, &[])).unwrap();
    expect(
        &cxrm_limited(&["verify", s(&chain), "--runnable"]),
        0,
        "valid",
    );
    expect(&cxrm_limited(&["run", s(&chain), s(&png)]), 0, "");
}

#[test]
fn tiny_sparse_tucker_and_zstd_files_of_huge_tensors_are_over_the_budget() {
    use cxrm::format::encoding::{self, Encoded, Repr, sparse, stream, tucker};
    let dir = tempfile::tempdir().unwrap();
    // 2^34 elements, none kept: a 132-byte file whose zero fill is 64 GB.
    let mut payload = Vec::new();
    stream::write(&[], 8, stream::Coding::Packed, &mut payload);
    let positions = sparse::Params {
        layout: sparse::Layout::Relative { index_bits: 8 },
        nnz: 0,
    };
    let mut w = Writer::new();
    w.add_tensor(
        "empty",
        DType::F32,
        &[1 << 34],
        Encoded::new(
            Repr::Sparse {
                positions,
                values: None,
            },
            false,
            payload,
        ),
    )
    .unwrap();
    let sparse_file = dir.path().join("sparse.cxrm");
    std::fs::write(&sparse_file, w.to_bytes().unwrap()).unwrap();
    // Tucker-2 of rank 1 rebuilding a [2^16, 2^16, 2, 2] tensor: 1 MB of factors, 64 GB out.
    let n = 1 << 16;
    let t = tucker::Tucker {
        out: n,
        inp: n,
        spatial: 4,
        rank_out: 1,
        rank_in: 1,
        u_out: vec![0.5; n],
        core: vec![0.5; 4],
        u_in: vec![0.5; n],
    };
    let mut w = Writer::new();
    w.add_tensor(
        "big",
        DType::F32,
        &[n as u64, n as u64, 2, 2],
        tucker::encode(&t, DType::F32),
    )
    .unwrap();
    let tucker_file = dir.path().join("tucker.cxrm");
    std::fs::write(&tucker_file, w.to_bytes().unwrap()).unwrap();
    // A zstd frame said to decode to 2^36 bytes (the spec's largest tensor): over the budget,
    // not "zstd: out of memory" as if the file were broken.
    let zstd = Encoded {
        stages: vec![
            encoding::StageSpec {
                id: encoding::StageId::Dense,
                params: Vec::new(),
            },
            encoding::StageSpec {
                id: encoding::StageId::Zstd,
                params: (1u64 << 36).to_le_bytes().to_vec(),
            },
        ],
        payload: std::borrow::Cow::Owned(vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]),
    };
    let mut w = Writer::new();
    w.add_tensor("z", DType::F32, &[1 << 34], zstd).unwrap();
    let zstd_file = dir.path().join("zstd.cxrm");
    std::fs::write(&zstd_file, w.to_bytes().unwrap()).unwrap();
    for file in [&sparse_file, &tucker_file, &zstd_file] {
        let out_file = dir.path().join("out.safetensors");
        expect(
            &cxrm_limited(&["verify", s(file)]),
            2,
            "more than the memory budget",
        );
        expect(
            &cxrm_limited(&["convert", s(file), "-o", s(&out_file)]),
            2,
            "more than the memory budget",
        );
        assert!(!out_file.exists());
        // inspect reads no payload: the tensor is listed, not decoded.
        expect(&cxrm_limited(&["inspect", s(file)]), 0, "tensors");
    }
}

/// A safetensors file of `tensors` (name, dtype, shape, little-endian bytes).
fn safetensors(tensors: &[(&str, &str, Vec<u64>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape,
                "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(bytes);
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    h.resize(h.len().div_ceil(8) * 8, b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    out
}

#[test]
fn more_tensors_than_the_spec_allows_never_replace_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.cxrm");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/valid/model.cxrm"),
        &out,
    )
    .unwrap();
    let good = std::fs::read(&out).unwrap();
    // 1,048,577 zero-size tensors: one past the spec's limit.
    let mut h = String::from("{");
    for i in 0..(1 << 20) + 1 {
        if i > 0 {
            h.push(',');
        }
        h.push_str(&format!(
            r#""t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#
        ));
    }
    h.push('}');
    let mut st = (h.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(h.as_bytes());
    let input = dir.path().join("many.safetensors");
    std::fs::write(&input, st).unwrap();
    let result = cxrm_limited(&["pack", s(&input), "-o", s(&out)]);
    assert_eq!(result.status.code(), Some(2), "{}", text(&result));
    assert!(text(&result).contains("1048576"), "{}", text(&result));
    assert_eq!(std::fs::read(&out).unwrap(), good);
}

#[test]
fn bad_values_and_bad_arguments_get_messages_that_point_at_them() {
    let dir = tempfile::tempdir().unwrap();
    // NaN and infinite weights are refused under --bits, with a count, not quantized in silence.
    let weights: Vec<u8> = [1.0f32, f32::NAN, -2.0, f32::INFINITY]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let input = dir.path().join("nan.safetensors");
    std::fs::write(&input, safetensors(&[("w", "F32", vec![2, 2], weights)])).unwrap();
    let out = dir.path().join("o.cxrm");
    expect(
        &cxrm_limited(&["pack", s(&input), "-o", s(&out), "--bits", "4"]),
        2,
        "2 of 4 weights are NaN or infinite",
    );
    assert!(!out.exists());
    // Each bad rule names its option.
    let st = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/interop/model.safetensors");
    expect(
        &cxrm_limited(&["pack", s(&st), "-o", s(&out), "--bits", "0"]),
        2,
        "--bits \"0\"",
    );
    // A stride of 0 says so, not that the kernel does not fit.
    let conv = Node::new("conv", "conv2d", &["input"], &["w"]).attr("stride", Value::ints([0, 0]));
    let zero_stride = dir.path().join("stride.cxrm");
    std::fs::write(
        &zero_stride,
        graph_model(8, vec![conv], &[("w", &[1, 1, 3, 3], vec![0.0; 9])]),
    )
    .unwrap();
    expect(
        &cxrm_limited(&["verify", s(&zero_stride), "--runnable"]),
        3,
        "stride must hold ints from 1 to 65536",
    );
    // `-o .` names a directory; it is not "device or resource busy".
    expect(
        &cxrm_limited(&["pack", s(&st), "-o", "."]),
        2,
        "names a directory",
    );
    // A JSON graph's errors name the JSON file, not a byte of a .cxrm that does not exist.
    let graph = dir.path().join("g.json");
    std::fs::write(
        &graph,
        r#"[{"name":"fc","op":"dense","inputs":["nope"],"weights":[]}]"#,
    )
    .unwrap();
    let result = cxrm_limited(&["pack", s(&st), "--graph", s(&graph), "-o", s(&out)]);
    expect(
        &result,
        2,
        "g.json: node fc reads \"nope\", which is not an earlier node",
    );
    assert!(!text(&result).contains("at byte"), "{}", text(&result));
}

#[test]
fn paths_with_terminal_escapes_are_printed_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m\u{1b}[2J.cxrm");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/runtime/lenet5.cxrm"),
        &model,
    )
    .unwrap();
    let png = dir.path().join("x\u{1b}[2J.png");
    image::GrayImage::new(28, 28)
        .save_with_format(&png, image::ImageFormat::Png)
        .unwrap();
    for args in [
        vec!["inspect", s(&model)],
        vec!["verify", s(&model)],
        vec!["run", s(&model), s(&png)],
    ] {
        let out = cxrm_limited(&args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        assert!(!text(&out).contains('\u{1b}'), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains("\\u{1b}[2J"),
            "{args:?}: {}",
            text(&out)
        );
    }
}

#[test]
fn eval_refuses_a_fifo_in_its_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("0");
    std::fs::create_dir(&class).unwrap();
    image::GrayImage::new(28, 28)
        .save(class.join("a.png"))
        .unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(class.join("b.png"))
            .status()
            .unwrap()
            .success()
    );
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/runtime/lenet5.cxrm");
    expect(
        &cxrm_limited(&["eval", s(&model), "--data", s(dir.path())]),
        2,
        "not a regular file",
    );
}
