//! Opening input files: only regular files are read. Opening a FIFO for reading blocks until
//! a writer appears, and a device can be endless, so both are refused with a message before
//! they are opened; a directory is refused with a message that says so instead of the
//! platform's puzzling "is a directory" or "no such device".

use crate::error::{Error, Result};
use std::fs::File;
use std::path::Path;

/// Open `path` for reading if it is a regular file (symbolic links followed).
pub fn open_regular(path: &Path) -> Result<File> {
    let shown = crate::text::escape_path(path);
    let meta = std::fs::metadata(path).map_err(|e| Error::io(format!("cannot open {shown}"), e))?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, device or socket)"
        };
        return Err(Error::Usage(format!("cannot read {shown}: it is {kind}")));
    }
    File::open(path).map_err(|e| Error::io(format!("cannot open {shown}"), e))
}

/// Read a whole regular file.
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    let mut file = open_regular(path)?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|e| Error::io(format!("cannot read {}", crate::text::escape_path(path)), e))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_directories_and_fifos_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let e = open_regular(dir.path()).unwrap_err().to_string();
        assert!(e.contains("it is a directory"), "{e}");
        #[cfg(unix)]
        {
            let fifo = dir.path().join("pipe");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
            assert_eq!(unsafe { libc_mkfifo(c.as_ptr(), 0o600) }, 0);
            let e = read_regular(&fifo).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        let file = dir.path().join("f");
        std::fs::write(&file, "ok").unwrap();
        assert_eq!(read_regular(&file).unwrap(), b"ok");
    }

    #[cfg(unix)]
    unsafe extern "C" {
        #[link_name = "mkfifo"]
        fn libc_mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
    }
}
