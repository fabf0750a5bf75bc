//! Container benchmarks.
//!
//! * `open/1MB` vs `open/1GB`: open + inspect (header, table, every record's stats, metadata)
//!   of two files with the same 64 tensors, 16 KiB vs 16 MiB each. Opening must not read
//!   payloads, so the ratio of the two should stay near 1 (the target is under 2).
//! * `read_16MiB/mmap_view` vs `read_16MiB/fs_read`: summing one 16 MiB f32 tensor through the
//!   zero-copy view of the mapped file, against reading the same byte range with std::fs.
//!
//! The files are generated on first run under `target/cxrm-bench/` (not committed).

use criterion::{Criterion, criterion_group, criterion_main};
use cxrm::{DType, Mapped, Value, Writer};
use std::hint::black_box;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

const TENSORS: usize = 64;

fn bench_file(label: &str, tensor_bytes: usize) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/cxrm-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{label}.cxrm"));
    if Mapped::open(&path)
        .and_then(|m| m.parse().map(|_| ()))
        .is_ok()
    {
        return path;
    }
    let payload: Vec<u8> = (0..tensor_bytes / 4)
        .flat_map(|i| (i as f32 * 1e-6).to_le_bytes())
        .collect();
    let mut w = Writer::new();
    w.set_metadata("model.name", Value::String(format!("bench-{label}")));
    for i in 0..TENSORS {
        w.add_dense(
            &format!("layer{i}.weight"),
            DType::F32,
            &[(tensor_bytes / 4 / 256) as u64, 256],
            &payload[..],
        )
        .unwrap();
    }
    w.write(&path).unwrap();
    path
}

fn open_and_inspect(path: &PathBuf) -> (u64, usize) {
    let mapped = Mapped::open(path).unwrap();
    let file = mapped.parse().unwrap();
    let meta = file.metadata().unwrap();
    let mut bits = 0.0;
    let mut params = 0;
    for t in file.tensors() {
        params += t.elements;
        bits += t.bits_per_weight().unwrap_or(0.0);
        black_box(t.chain_name());
    }
    black_box(bits);
    (params, meta.len())
}

fn open(c: &mut Criterion) {
    let small = bench_file("1MB", 16 << 10);
    let large = bench_file("1GB", 16 << 20);
    let mut group = c.benchmark_group("open");
    group.bench_function("1MB", |b| b.iter(|| open_and_inspect(black_box(&small))));
    group.bench_function("1GB", |b| b.iter(|| open_and_inspect(black_box(&large))));
    group.finish();
}

fn read_dense(c: &mut Criterion) {
    let large = bench_file("1GB", 16 << 20);
    let mapped = Mapped::open(&large).unwrap();
    let name = "layer7.weight";
    let extent = mapped.parse().unwrap().tensor(name).unwrap().extent;
    let mut group = c.benchmark_group("read_16MiB");
    group.bench_function("mmap_view", |b| {
        b.iter(|| {
            let file = mapped.parse().unwrap();
            let view = file.view(name).unwrap();
            let values: &[f32] = view.as_slice().unwrap();
            black_box(values.iter().sum::<f32>())
        })
    });
    group.bench_function("fs_read", |b| {
        b.iter(|| {
            let mut f = std::fs::File::open(&large).unwrap();
            f.seek(SeekFrom::Start(extent.offset)).unwrap();
            let mut bytes = vec![0u8; extent.length as usize];
            f.read_exact(&mut bytes).unwrap();
            let values: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            black_box(values.iter().sum::<f32>())
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = open, read_dense
}
criterion_main!(benches);
