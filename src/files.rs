//! Small files kept beside the store (the last checkpoint, a witness's state): replaced whole, so that a
//! crash at any point leaves the old file or the new one, never a torn one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Writes `contents` to `path`, replacing it atomically and durably: a temporary file beside it is
/// written and synced, renamed over `path`, and the directory synced.
pub fn replace_durably(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)?;
    let directory = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(directory)?.sync_all()
}

/// The contents of `path`, or `None` if there is no such file.
pub fn read_if_exists(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        assert_eq!(read_if_exists(&path).expect("read"), None);
        replace_durably(&path, b"one").expect("write");
        replace_durably(&path, b"two").expect("replace");
        assert_eq!(read_if_exists(&path).expect("read"), Some(b"two".to_vec()));
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state")]);
    }
}
