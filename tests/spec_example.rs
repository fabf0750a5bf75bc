//! The spec's worked example (§11) must be the real bytes of `fixtures/valid/tiny.cxrm`.

use std::path::Path;

#[test]
fn spec_hexdump_matches_the_tiny_fixture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = std::fs::read_to_string(root.join("spec/cxrm.md")).unwrap();
    let marker = "<!-- hexdump: fixtures/valid/tiny.cxrm -->\n```\n";
    let start = spec.find(marker).expect("spec has the hexdump marker") + marker.len();
    let end = start + spec[start..].find("```").unwrap();
    let mut bytes = Vec::new();
    for line in spec[start..end].lines() {
        // xxd layout: "00000000: 4358 524d ...  ascii"
        let hex = &line[10..49];
        for group in hex.split_whitespace() {
            for i in (0..group.len()).step_by(2) {
                bytes.push(u8::from_str_radix(&group[i..i + 2], 16).unwrap());
            }
        }
    }
    let fixture = std::fs::read(root.join("fixtures/valid/tiny.cxrm")).unwrap();
    assert_eq!(bytes, fixture);
}

#[test]
fn spec_field_table_offsets_point_at_their_bytes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = std::fs::read_to_string(root.join("spec/cxrm.md")).unwrap();
    let fixture = std::fs::read(root.join("fixtures/valid/tiny.cxrm")).unwrap();
    let section = &spec[spec.find("## 11. Worked example").unwrap()..];
    let mut checked = 0;
    for line in section.lines() {
        // Rows look like: | `0x7A` | `00 01 … 00` `08 00 … 00` | meaning |
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with("`0x") {
            continue;
        }
        let offset =
            usize::from_str_radix(cells[1].trim_matches('`').trim_start_matches("0x"), 16).unwrap();
        let first = cells[2].split('`').nth(1).unwrap();
        // The leading hex bytes of the first group, up to an ellipsis or a non-hex word.
        let bytes: Vec<u8> = first
            .split_whitespace()
            .take_while(|w| w.len() == 2 && u8::from_str_radix(w, 16).is_ok())
            .map(|w| u8::from_str_radix(w, 16).unwrap())
            .collect();
        if bytes.is_empty() {
            continue;
        }
        assert_eq!(
            &fixture[offset..offset + bytes.len()],
            &bytes[..],
            "spec row at 0x{offset:x}: {line}"
        );
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} rows checked");
}

#[test]
fn spec_deep_compression_example_is_what_the_encoder_writes() {
    use cxrm::compress::methods::deep_compression::store::{DeepPlan, Prepared, StreamMode};
    use cxrm::format::encoding::sparse::Layout;
    let lines = spec_hex_block("<!-- deep example -->");
    let values = [0.0f32, 0.5, 0.0, 0.0, -0.25, 0.0, 0.5, 0.5];
    let plan = DeepPlan::pruned().bits(1);
    let enc = Prepared::new(&values, &[2, 4], &plan)
        .build(
            Some(Layout::Relative { index_bits: 5 }),
            StreamMode::HuffmanOnly,
            None,
        )
        .unwrap();
    assert_eq!(lines[0], enc.stages[0].params);
    assert_eq!(lines[1], enc.stages[1].params);
    assert!(enc.stages[2].params.is_empty());
    assert_eq!(lines[3], enc.payload.to_vec());
}

#[test]
fn spec_binary_example_is_what_the_encoder_writes() {
    use cxrm::DType;
    use cxrm::format::encoding::binary;
    let lines = spec_hex_block("<!-- binary example -->");
    let values = [0.5f32, -0.5, 0.5, -1.0, -1.0, 1.0];
    let b = binary::binarize(&values, 2, 3, DType::F32);
    assert_eq!(b.to_f32(), values);
    let enc = binary::encode(
        &b,
        binary::Params {
            scale_dtype: DType::F32,
        },
    );
    assert_eq!(lines[0], enc.stages[0].params);
    assert_eq!(lines[1], enc.payload.to_vec());
}

/// The lines of the spec's code block after `marker`, each as the hex bytes after its colon.
fn spec_hex_block(marker: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = std::fs::read_to_string(root.join("spec/cxrm.md")).unwrap();
    let marker = format!("{marker}\n```\n");
    let start = spec.find(&marker).expect("spec has the example") + marker.len();
    let block = &spec[start..start + spec[start..].find("```").unwrap()];
    block
        .lines()
        .map(|line| {
            line.split(':')
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .filter_map(|w| u8::from_str_radix(w, 16).ok())
                .collect()
        })
        .collect()
}

/// §5.12's test vectors are the generator's real output.
#[test]
fn spec_miracle_vectors_match_the_generator() {
    use cxrm::format::encoding::miracle::Candidate;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = std::fs::read_to_string(root.join("spec/cxrm.md")).unwrap();
    let section = &spec[spec.find("### 5.12").unwrap()..spec.find("## 6.").unwrap()];
    let mut checked = 0;
    for line in section.lines() {
        // | block | index | `BITS` (value) | `BITS` (value) | `BITS` (value) |
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() != 7 || cells[1].parse::<u32>().is_err() {
            continue;
        }
        let (block, index) = (cells[1].parse().unwrap(), cells[2].parse().unwrap());
        let c = Candidate::new(0x0123_4567_89AB_CDEF, block, index);
        for (j, cell) in cells[3..6].iter().enumerate() {
            let bits = u64::from_str_radix(&cell[1..17], 16).unwrap();
            assert_eq!(c.standard_normal(j as u64).to_bits(), bits, "{line}");
            checked += 1;
        }
    }
    assert_eq!(checked, 9, "three vectors of three numbers");
}

/// §5.13's sign vector is the hash's real output.
#[test]
fn spec_hashed_signs_match_the_hash() {
    use cxrm::format::encoding::hashed::negated;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = std::fs::read_to_string(root.join("spec/cxrm.md")).unwrap();
    let section = &spec[spec.find("### 5.13").unwrap()..spec.find("## 6.").unwrap()];
    let marker = "the signs of elements 0 to 15 are `";
    let at = section.find(marker).expect("the test vector") + marker.len();
    let printed = &section[at..at + 16];
    let signs: String = (0..16)
        .map(|e| {
            if negated(0x0123_4567_89AB_CDEF, e) {
                '-'
            } else {
                '+'
            }
        })
        .collect();
    assert_eq!(signs, printed);
}
