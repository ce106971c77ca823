//! The files behind the `state` interface: one blob per plugin and
//! attachment, at a path the runtime chooses.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::HostError;

/// Largest blob a plugin may store, in bytes. A plugin saves a few link
/// settings, so this leaves room without letting one fill the disk.
pub const MAX_STATE_BYTES: usize = 64 * 1024;

/// Reads the blob at `path`; an absent file is no blob.
pub(super) fn read(path: &Path) -> Result<Option<String>, HostError> {
    match std::fs::read_to_string(path) {
        Ok(data) => Ok(Some(data)),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(HostError::Failed(format!(
            "failed to read plugin state {}: {error}",
            path.display()
        ))),
    }
}

/// Writes the blob to a temporary file beside `path` and renames it, so a
/// reader never sees half a blob.
pub(super) fn write(path: &Path, data: &str) -> Result<(), HostError> {
    if data.len() > MAX_STATE_BYTES {
        return Err(HostError::Invalid(format!(
            "plugin state of {} bytes is larger than the limit of {MAX_STATE_BYTES} bytes",
            data.len()
        )));
    }
    let failed = |error: std::io::Error| {
        HostError::Failed(format!(
            "failed to write plugin state {}: {error}; check that the cache directory is writable",
            path.display()
        ))
    };

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let temporary = temporary_path(path);
    std::fs::write(&temporary, data).map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}

/// Removes the blob at `path` and its directory once that is empty. An
/// absent blob is not an error.
pub fn remove_state(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    }
    // The directory is per attachment; another plugin's blob keeps it.
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net-id-eth0").join("tuning");

        assert_eq!(read(&path).unwrap(), None);
        write(&path, "{\"mtu\":1500}").unwrap();
        write(&path, "{\"mtu\":1400}").unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("{\"mtu\":1400}"));

        remove_state(&path).unwrap();
        assert_eq!(read(&path).unwrap(), None);
        assert!(!path.parent().unwrap().exists());
        remove_state(&path).unwrap();
    }

    #[test]
    fn oversized_blob_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let error = write(&path, &"x".repeat(MAX_STATE_BYTES + 1)).unwrap_err();
        assert!(matches!(error, HostError::Invalid(_)), "{error:?}");
        assert!(!path.exists());
    }
}
