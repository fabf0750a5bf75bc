//! Make untrusted text safe to print: names and strings in a hostile file may carry terminal
//! escape sequences, so control characters are shown escaped, never sent raw.

/// Characters of a name or string shown before the rest is summarised: a hostile file's
/// 2,000-byte name should not fill a terminal.
pub const SHOWN_CHARS: usize = 200;

/// Escape control characters (C0, DEL, C1) and backslashes; everything else printable stays.
/// Text longer than [`SHOWN_CHARS`] characters is cut there, with its length in bytes noted.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(4 * SHOWN_CHARS));
    if let Some((cut, _)) = s.char_indices().nth(SHOWN_CHARS) {
        out.push_str(&escape(&s[..cut]));
        out.push_str(&format!("… ({} bytes in all)", s.len()));
        return out;
    }
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Escape control characters only, leaving backslashes alone: for a message whose names were
/// already escaped where it was made, so that nothing is escaped twice.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                format!("\\u{{{:x}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A path as [`escape`] shows text: a hostile file name cannot reach the terminal raw.
pub fn escape_path(path: &std::path::Path) -> String {
    escape(&path.to_string_lossy())
}

/// Show raw bytes as an escaped ASCII string, e.g. for a wrong magic number.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_control_sequences() {
        assert_eq!(escape("conv1.weight"), "conv1.weight");
        assert_eq!(escape("\u{1b}[2Jevil"), "\\u{1b}[2Jevil");
        assert_eq!(escape("a\nb\u{9b}"), "a\\nb\\u{9b}");
        assert_eq!(escape_bytes(b"CX\x00\xff"), "\"CX\\x00\\xff\"");
        let long = "n".repeat(2000);
        assert_eq!(
            escape(&long),
            format!("{}… (2000 bytes in all)", "n".repeat(SHOWN_CHARS))
        );
    }
}
