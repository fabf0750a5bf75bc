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
