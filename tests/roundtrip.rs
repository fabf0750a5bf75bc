//! Property tests: writer → reader round trips are bit-exact for any set of tensors, dtypes,
//! shapes (scalars and zero-sized included), encodings and metadata; and no input makes the
//! reader panic.

use cxrm::format::encoding::{self};
use cxrm::{Cxrm, DType, Value, ValueType, Writer};
use proptest::prelude::*;
use std::borrow::Cow;

#[derive(Debug, Clone)]
struct TensorCase {
    dtype: DType,
    shape: Vec<u64>,
    bytes: Vec<u8>,
    zstd: Option<i32>,
}

fn tensor_case() -> impl Strategy<Value = TensorCase> {
    let dtype = prop::sample::select(DType::ALL.to_vec());
    let shape = prop::collection::vec(0u64..6, 0..5);
    (dtype, shape, prop::option::of(1i32..10), any::<bool>()).prop_flat_map(
        |(dtype, shape, zstd, repetitive)| {
            let len = shape.iter().product::<u64>() as usize * dtype.size();
            let bytes = if repetitive {
                // Compressible data, so the zstd stage is really exercised.
                (0u8..4).prop_map(move |b| vec![b; len]).boxed()
            } else {
                prop::collection::vec(any::<u8>(), len).boxed()
            };
            bytes.prop_map(move |bytes| TensorCase {
                dtype,
                shape: shape.clone(),
                bytes,
                zstd,
            })
        },
    )
}

fn leaf_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        ".{0,12}".prop_map(Value::String),
        any::<i64>().prop_map(Value::Int),
        (-1e300f64..1e300).prop_map(Value::Float),
        any::<bool>().prop_map(Value::Bool),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf_value().prop_recursive(3, 24, 6, |inner| {
        // Homogeneous arrays: every element takes the first element's type.
        prop::collection::vec(inner, 0..6).prop_map(|items| {
            let elem = items.first().map_or(ValueType::Int, Value::value_type);
            Value::Array(
                elem,
                items
                    .into_iter()
                    .filter(|v| v.value_type() == elem)
                    .collect(),
            )
        })
    })
}

fn metadata() -> impl Strategy<Value = Vec<(String, Value)>> {
    prop::collection::btree_map("[a-z.]{1,16}", value(), 0..6).prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_is_bit_exact(tensors in prop::collection::vec(tensor_case(), 0..6), meta in metadata()) {
        let mut w = Writer::new();
        for (k, v) in &meta {
            w.set_metadata(k.clone(), v.clone());
        }
        for (i, t) in tensors.iter().enumerate() {
            let mut enc = encoding::dense::encode(Cow::Borrowed(&t.bytes));
            if let Some(level) = t.zstd {
                enc = encoding::zstd::encode(enc, level).unwrap();
            }
            w.add_tensor(&format!("t{i}"), t.dtype, &t.shape, enc).unwrap();
        }
        let bytes = w.to_bytes().unwrap();
        let file = Cxrm::parse(&bytes).unwrap();
        file.verify().unwrap();
        prop_assert_eq!(file.metadata().unwrap(), meta);
        prop_assert_eq!(file.tensors().len(), tensors.len());
        for (i, t) in tensors.iter().enumerate() {
            let record = &file.tensors()[i];
            prop_assert_eq!(record.extent.offset % 64, 0);
            let data = file.decode(&format!("t{i}")).unwrap();
            prop_assert_eq!(data.dtype, t.dtype);
            prop_assert_eq!(&data.shape, &t.shape);
            prop_assert_eq!(&data.bytes[..], &t.bytes[..]);
            if record.is_plain_dense() {
                // Zero-copy: the view borrows the file's own bytes.
                let view = file.view(&format!("t{i}")).unwrap();
                prop_assert!(matches!(view.bytes, Cow::Borrowed(_)));
                prop_assert_eq!(view.bytes.as_ptr(), bytes[record.extent.offset as usize..].as_ptr());
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(file) = Cxrm::parse(&data) {
            let _ = file.verify();
        }
    }

    #[test]
    fn mutated_valid_files_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), fix_crc in any::<bool>()) {
        let mut w = Writer::new();
        w.set_metadata("k", Value::strings(["a", "b"]));
        let compressible = vec![3u8; 256];
        w.add_tensor("z", DType::U8, &[16, 16], encoding::zstd::encode(encoding::dense::encode(Cow::Borrowed(&compressible)), 3).unwrap()).unwrap();
        w.add_dense("d", DType::F32, &[2], vec![0u8; 8]).unwrap();
        let mut bytes = w.to_bytes().unwrap();
        for (at, v) in edits {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if fix_crc {
            // Re-seal the header so that mutations reach the table and payload checks.
            let table_size = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
            let end = (64 + table_size).min(bytes.len());
            let crc = cxrm::format::container::header::header_crc(&bytes[..64], &bytes[64..end]);
            bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        }
        if let Ok(file) = Cxrm::parse(&bytes) {
            let _ = file.verify();
            let _ = file.graph();
            for t in file.tensors() {
                let _ = file.decode_record(t);
            }
        }
    }
}

#[test]
fn writer_refuses_what_the_reader_would_reject() {
    let mut w = Writer::new();
    assert!(w.add_dense("", DType::F32, &[1], vec![0u8; 4]).is_err());
    assert!(
        w.add_dense("x", DType::F32, &[2], vec![0u8; 4]).is_err(),
        "wrong byte count"
    );
    assert!(
        w.add_dense("x", DType::F32, &[1; 9], vec![0u8; 4]).is_err(),
        "rank 9"
    );
    assert!(
        w.add_dense("x", DType::F32, &[1 << 20, 1 << 21], Vec::new())
            .is_err(),
        "too many elements"
    );
    w.add_dense("x", DType::F32, &[1], vec![0u8; 4]).unwrap();
    assert!(
        w.add_dense("x", DType::F32, &[1], vec![0u8; 4]).is_err(),
        "duplicate"
    );
    w.set_graph(cxrm::Graph {
        nodes: vec![cxrm::Node::new("fc", "dense", &["input"], &["missing"])],
    });
    assert!(w.to_bytes().is_err(), "graph naming a missing tensor");
}

#[test]
fn atomic_write_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m.cxrm");
    let mut w = Writer::new();
    w.add_dense("x", DType::F32, &[1], vec![0u8; 4]).unwrap();
    assert_eq!(
        w.write(&target).unwrap(),
        std::fs::metadata(&target).unwrap().len()
    );
    // A failing write (bad graph) leaves the earlier file untouched and no temporary behind.
    let before = std::fs::read(&target).unwrap();
    w.set_graph(cxrm::Graph {
        nodes: vec![cxrm::Node::new("fc", "dense", &["nowhere"], &[])],
    });
    assert!(w.write(&target).is_err());
    assert_eq!(std::fs::read(&target).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[cfg(unix)]
#[test]
fn written_files_are_world_readable_not_private_temporaries() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m.cxrm");
    let mut w = Writer::new();
    w.add_dense("x", DType::F32, &[1], vec![0u8; 4]).unwrap();
    w.write(&target).unwrap();
    assert_eq!(
        std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o644
    );
}
