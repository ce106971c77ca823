//! The reads behind `ipam-store.read-files`: the regular files of an IPAM
//! plugin's state directory, listed and read natively in one host call
//! instead of several WASI calls per file.

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use cap_std::fs::{Dir, DirEntry, OpenOptions, OpenOptionsExt};

use super::HostError;
use super::cniwasm::host::ipam_store::{StoreFile, StoreFiles};

/// Largest file, in bytes, whose contents `read-files` returns. A
/// host-local reservation contains a container id and an interface name,
/// and `last_reserved_ip.<n>` one address, so these files have a few dozen
/// bytes. The limit bounds what one file adds to the copy into plugin
/// memory, and a larger file is only named, for the plugin to read itself.
pub const MAX_IPAM_STORE_FILE_BYTES: u64 = 4096;

/// A network's IPAM state directory, open and locked by the runtime for
/// the whole plugin call.
pub(super) struct IpamStateDir {
    /// The directory's host path, for messages.
    pub(super) path: PathBuf,
    pub(super) dir: Dir,
}

/// Lists the regular files directly in `state`: the contents of those of at
/// most [`MAX_IPAM_STORE_FILE_BYTES`] bytes and the names of larger ones.
pub(super) fn read_files(state: Option<&IpamStateDir>) -> Result<StoreFiles, HostError> {
    let Some(state) = state else {
        return Err(HostError::NotFound(
            "this call has no IPAM state directory: the host grants one only to a plugin it runs as an IPAM delegate, unless the node policy sets \"ipamState\": false for it"
                .into(),
        ));
    };
    let failed = |error: std::io::Error| {
        HostError::Failed(format!(
            "failed to read IPAM state directory {}: {error}",
            state.path.display()
        ))
    };

    let mut files = StoreFiles {
        small: Vec::new(),
        large: Vec::new(),
    };
    for entry in state.dir.entries().map_err(failed)? {
        let entry = entry.map_err(failed)?;
        // The entry's type is that of the name itself, so a symbolic link
        // is not a regular file here.
        if !entry.file_type().map_err(failed)?.is_file() {
            continue;
        }
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };

        match read_small(&entry, &state.path.join(&name))? {
            Some(Contents::Small(contents)) => files.small.push(StoreFile { name, contents }),
            Some(Contents::Large) => files.large.push(name),
            None => {}
        }
    }

    files.small.sort_by(|a, b| a.name.cmp(&b.name));
    files.large.sort();
    Ok(files)
}

enum Contents {
    Small(Vec<u8>),
    Large,
}

/// Reads one file of at most [`MAX_IPAM_STORE_FILE_BYTES`] bytes. Returns
/// `None` for a file removed since the listing, or one that is no longer a
/// regular file.
fn read_small(entry: &DirEntry, path: &Path) -> Result<Option<Contents>, HostError> {
    let failed = |error: std::io::Error| {
        HostError::Failed(format!(
            "failed to read IPAM state file {}: {error}",
            path.display()
        ))
    };

    // O_NONBLOCK keeps the open from waiting on a FIFO put in place of the
    // listed file, which the type check after the open then skips.
    let mut options = OpenOptions::new();
    options.read(true).custom_flags(libc::O_NONBLOCK);
    let file = match entry.open_with(&options) {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(failed(error)),
    };
    if !file.metadata().map_err(failed)?.is_file() {
        return Ok(None);
    }

    // Reading one byte past the limit detects a larger file without
    // trusting a size taken before the read.
    let mut contents = Vec::new();
    file.take(MAX_IPAM_STORE_FILE_BYTES + 1)
        .read_to_end(&mut contents)
        .map_err(failed)?;
    if contents.len() as u64 > MAX_IPAM_STORE_FILE_BYTES {
        return Ok(Some(Contents::Large));
    }
    Ok(Some(Contents::Small(contents)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> IpamStateDir {
        IpamStateDir {
            path: path.to_path_buf(),
            dir: Dir::open_ambient_dir(path, cap_std::ambient_authority()).unwrap(),
        }
    }

    fn names(files: &StoreFiles) -> Vec<&str> {
        files.small.iter().map(|file| file.name.as_str()).collect()
    }

    #[test]
    fn returns_small_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10.1.2.3"), "a\r\neth0").unwrap();
        std::fs::write(dir.path().join("10.1.2.2"), "b\r\neth0").unwrap();
        std::fs::write(dir.path().join("lock"), "").unwrap();
        let limit = MAX_IPAM_STORE_FILE_BYTES as usize;
        std::fs::write(dir.path().join("at-limit"), vec![b'x'; limit]).unwrap();

        let files = read_files(Some(&open(dir.path()))).unwrap();

        assert_eq!(names(&files), ["10.1.2.2", "10.1.2.3", "at-limit", "lock"]);
        assert_eq!(files.small[0].contents, b"b\r\neth0");
        assert_eq!(files.small[1].contents, b"a\r\neth0");
        assert_eq!(files.small[2].contents.len(), limit);
        assert!(files.small[3].contents.is_empty());
        assert!(files.large.is_empty());
    }

    #[test]
    fn skips_directories_links_and_large() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10.1.2.2"), "a\r\neth0").unwrap();
        std::fs::create_dir(dir.path().join("10.1.2.3")).unwrap();
        std::fs::write(dir.path().join("10.1.2.3/inner"), "b\r\neth0").unwrap();
        std::os::unix::fs::symlink("10.1.2.2", dir.path().join("10.1.2.4")).unwrap();
        let large = vec![b'x'; MAX_IPAM_STORE_FILE_BYTES as usize + 1];
        std::fs::write(dir.path().join("10.1.2.5"), large).unwrap();

        let files = read_files(Some(&open(dir.path()))).unwrap();

        assert_eq!(names(&files), ["10.1.2.2"]);
        assert_eq!(files.large, ["10.1.2.5"]);
    }

    #[test]
    fn missing_directory_is_not_found() {
        let error = read_files(None).unwrap_err();

        let HostError::NotFound(message) = error else {
            panic!("expected not-found, got {error:?}");
        };
        assert!(message.contains("no IPAM state directory"), "{message}");
        assert!(message.contains("ipamState"), "{message}");
    }

    #[test]
    fn skips_names_not_utf8() {
        use std::os::unix::ffi::OsStrExt;

        let dir = tempfile::tempdir().unwrap();
        let name = std::ffi::OsStr::from_bytes(b"10.1.2.\xff");
        std::fs::write(dir.path().join(name), "a\r\neth0").unwrap();
        std::fs::write(dir.path().join("10.1.2.2"), "b\r\neth0").unwrap();

        let files = read_files(Some(&open(dir.path()))).unwrap();

        assert_eq!(names(&files), ["10.1.2.2"]);
    }
}
