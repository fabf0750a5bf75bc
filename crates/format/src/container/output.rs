//! Writing an output file without ever losing one: every file cxrm writes goes to a temporary
//! file beside its destination, is checked, synced and then renamed over it. On any error the
//! destination is untouched.
//!
//! What may be replaced, and how:
//! - a destination that does not exist is created;
//! - an existing regular file is replaced, keeping its permissions; a read-only one (no write
//!   bit) only with [`Output::force`];
//! - a symbolic link is followed, as `cp` does: its target is what gets replaced, and the link
//!   stays;
//! - anything else (a directory, device, FIFO or socket) is refused: renaming a file over
//!   `/dev/null` would replace the device node;
//! - a destination that is the same file as one of the inputs (same device and inode, through
//!   links) is refused, so `cxrm convert m.cxrm -o m.cxrm` cannot destroy its source.
//!
//! `-` names standard output: the file is written to an anonymous temporary file, checked, and
//! only then copied out, so a reader of the pipe never sees an invalid file. Standard output
//! that is a terminal is refused: a binary file there is never what was meant.
//!
//! Temporary files are named `.cxrm-NAME.XXXXXX.tmp`, with NAME cut so that the whole name
//! fits in 255 bytes, and are locked while written. A process killed mid-write leaves one
//! behind; the next write to the same destination removes those that are unlocked and more
//! than a minute old.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where and how to write one output.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Files the output is made from; the destination must not be any of them.
    pub inputs: Vec<PathBuf>,
    /// Replace a read-only destination.
    pub force: bool,
}

/// The prefix of every temporary file cxrm creates.
pub const TEMP_PREFIX: &str = ".cxrm-";
const TEMP_SUFFIX: &str = ".tmp";
/// Bytes of the destination's name kept in a temporary name: `.cxrm-` + 200 + `.XXXXXX.tmp`
/// stays well under the usual 255-byte limit on a file name.
const NAME_BYTES_KEPT: usize = 200;
/// A temporary file older than this and unlocked was left by a process that died.
const STALE_AFTER: Duration = Duration::from_secs(60);

impl Output {
    pub fn new() -> Self {
        Output::default()
    }

    /// An output made from `inputs`.
    pub fn from_inputs<P: AsRef<Path>>(inputs: impl IntoIterator<Item = P>) -> Self {
        Output {
            inputs: inputs
                .into_iter()
                .map(|p| p.as_ref().to_path_buf())
                .collect(),
            force: false,
        }
    }

    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Write `path` through `fill`, then run `check` on the finished temporary file before it
    /// replaces anything.
    pub fn write(
        &self,
        path: &Path,
        fill: impl FnOnce(&mut std::io::BufWriter<&File>) -> std::io::Result<()>,
        check: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        if is_stdout(path) {
            return write_stdout(fill, check);
        }
        let target = self.resolve(path)?;
        let ctx = || format!("cannot write {}", crate::text::escape_path(path));
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let stem = temp_stem(&target);
        remove_stale(dir, &stem);
        let tmp = tempfile::Builder::new()
            .prefix(&stem)
            .suffix(TEMP_SUFFIX)
            .tempfile_in(dir)
            .map_err(|e| Error::io(ctx(), e))?;
        // Held until the rename, so a concurrent cleanup never takes a file being written.
        tmp.as_file()
            .try_lock()
            .map_err(|e| Error::io(ctx(), std::io::Error::other(format!("cannot lock: {e}"))))?;
        {
            let mut buf = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
            fill(&mut buf).map_err(|e| Error::io(ctx(), e))?;
            buf.flush().map_err(|e| Error::io(ctx(), e))?;
        }
        check(tmp.path())?;
        // Temporary files are created private (0600); a model file is not a secret, so give it
        // the permissions of the file it replaces, or the usual 0644.
        let permissions = match std::fs::metadata(&target) {
            Ok(m) => m.permissions(),
            Err(_) => default_permissions(),
        };
        tmp.as_file()
            .set_permissions(permissions)
            .map_err(|e| Error::io(ctx(), e))?;
        tmp.as_file().sync_all().map_err(|e| Error::io(ctx(), e))?;
        tmp.persist(&target)
            .map_err(|e| Error::io(ctx(), e.error))?;
        Ok(())
    }

    /// The file to replace: `path`, or the target of the symbolic link it is; checked against
    /// the rules above.
    fn resolve(&self, path: &Path) -> Result<PathBuf> {
        let refuse = |why: String| {
            Error::Usage(format!(
                "will not write {}: {why}",
                crate::text::escape_path(path)
            ))
        };
        if path.as_os_str().is_empty() || path.file_name().is_none() {
            return Err(refuse("it names a directory, not a file".into()));
        }
        let target = match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path)
                .or_else(|_| {
                    std::fs::read_link(path).map(|t| match path.parent() {
                        Some(dir) => dir.join(t),
                        None => t,
                    })
                })
                .map_err(|e| Error::io(format!("cannot follow {}", path.display()), e))?,
            _ => path.to_path_buf(),
        };
        let Ok(meta) = std::fs::metadata(&target) else {
            return Ok(target);
        };
        if !meta.is_file() {
            return Err(refuse(
                "it exists and is not a regular file (a directory, device, FIFO or socket)".into(),
            ));
        }
        if meta.permissions().readonly() && !self.force {
            return Err(refuse("it is read-only (use --force to replace it)".into()));
        }
        for input in &self.inputs {
            if same_file(&meta, input) {
                return Err(refuse(format!(
                    "it is the input {}",
                    crate::text::escape_path(input)
                )));
            }
        }
        Ok(target)
    }
}

/// Whether an output path names standard output.
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Build the file in a private temporary file, check it, then copy it to standard output.
fn write_stdout(
    fill: impl FnOnce(&mut std::io::BufWriter<&File>) -> std::io::Result<()>,
    check: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    use std::io::{IsTerminal, Seek};
    let ctx = || "cannot write to standard output".to_string();
    if std::io::stdout().is_terminal() {
        return Err(Error::Usage(
            "will not write a binary file to a terminal: redirect standard output, or name a file"
                .into(),
        ));
    }
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile()
        .map_err(|e| Error::io(ctx(), e))?;
    {
        let mut buf = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        fill(&mut buf).map_err(|e| Error::io(ctx(), e))?;
        buf.flush().map_err(|e| Error::io(ctx(), e))?;
    }
    check(tmp.path())?;
    let mut file = tmp.as_file();
    file.rewind().map_err(|e| Error::io(ctx(), e))?;
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut file, &mut stdout).map_err(|e| Error::io(ctx(), e))?;
    stdout.flush().map_err(|e| Error::io(ctx(), e))
}

/// Write `path` through `fill`, atomically, with the default rules and no inputs.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut std::io::BufWriter<&File>) -> std::io::Result<()>,
) -> Result<()> {
    Output::new().write(path, fill, |_| Ok(()))
}

#[cfg(unix)]
fn same_file(meta: &std::fs::Metadata, other: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(other).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &Path) -> bool {
    false
}

/// `.cxrm-NAME.`, NAME the destination's file name cut to a whole character within
/// [`NAME_BYTES_KEPT`] bytes.
fn temp_stem(target: &Path) -> String {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cut = name.len().min(NAME_BYTES_KEPT);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{TEMP_PREFIX}{}.", &name[..cut])
}

/// Remove temporary files of an earlier write to the same destination that were left behind:
/// those more than a minute old whose lock nobody holds. Failures are ignored; this is
/// housekeeping, and the write itself does not depend on it.
fn remove_stale(dir: &Path, stem: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let random_part = name
            .strip_prefix(stem)
            .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX));
        if !random_part
            .is_some_and(|r| r.len() == 6 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > STALE_AFTER));
        if !old {
            continue;
        }
        if let Ok(file) = File::open(entry.path())
            && file.try_lock().is_ok()
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(unix)]
fn default_permissions() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o644)
}

#[cfg(not(unix))]
fn default_permissions() -> std::fs::Permissions {
    tempfile::tempfile()
        .and_then(|f| f.metadata())
        .map(|m| m.permissions())
        .expect("a temporary file has permissions")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(out: &Output, path: &Path, text: &str) -> Result<()> {
        out.write(path, |w| w.write_all(text.as_bytes()), |_| Ok(()))
    }

    #[test]
    fn refuses_inputs_directories_and_read_only_files() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.cxrm");
        std::fs::write(&input, "original").unwrap();
        let link = dir.path().join("hard.cxrm");
        std::fs::hard_link(&input, &link).unwrap();
        let from_input = Output::from_inputs([&input]);
        for dest in [&input, &link] {
            let e = write(&from_input, dest, "new").unwrap_err().to_string();
            assert!(e.contains("it is the input"), "{e}");
        }
        assert_eq!(std::fs::read_to_string(&input).unwrap(), "original");
        let e = write(&Output::new(), dir.path(), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let ro = dir.path().join("ro.cxrm");
        std::fs::write(&ro, "keep").unwrap();
        let mut p = std::fs::metadata(&ro).unwrap().permissions();
        p.set_readonly(true);
        std::fs::set_permissions(&ro, p).unwrap();
        let e = write(&Output::new(), &ro, "x").unwrap_err().to_string();
        assert!(e.contains("read-only"), "{e}");
        write(&Output::new().force(true), &ro, "forced").unwrap();
        assert_eq!(std::fs::read_to_string(&ro).unwrap(), "forced");
    }

    #[cfg(unix)]
    #[test]
    fn follows_symlinks_and_refuses_devices() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.cxrm");
        std::fs::write(&target, "old").unwrap();
        let link = dir.path().join("link.cxrm");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write(&Output::new(), &link, "new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        let e = write(&Output::new(), Path::new("/dev/null"), "x").unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_failed_check_leaves_the_destination_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("model.cxrm");
        std::fs::write(&dest, "good").unwrap();
        let e = Output::new().write(
            &dest,
            |w| w.write_all(b"bad"),
            |_| Err(Error::Usage("check failed".into())),
        );
        assert!(e.is_err());
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "good");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn long_names_fit_and_stale_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let long = dir.path().join("m".repeat(245));
        write(&Output::new(), &long, "x").unwrap();
        let stale = dir
            .path()
            .join(format!("{}abc123{TEMP_SUFFIX}", temp_stem(&long)));
        std::fs::write(&stale, "left by a killed writer").unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let fresh = dir
            .path()
            .join(format!("{}xyz789{TEMP_SUFFIX}", temp_stem(&long)));
        std::fs::write(&fresh, "being written").unwrap();
        write(&Output::new(), &long, "y").unwrap();
        assert!(!stale.exists(), "an old unlocked temporary is removed");
        assert!(fresh.exists(), "a recent one may belong to a live writer");
    }
}
