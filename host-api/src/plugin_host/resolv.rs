//! The file behind `dns.read-resolv-conf`: a resolv.conf the host reads for
//! a plugin, which has no file access of its own.

use std::io::{ErrorKind, Read};
use std::path::{Component, Path};

use super::HostError;

/// Largest resolv.conf the host reads, in bytes. Real files have a few
/// lines of a few hundred bytes in all, so this is a generous estimate that
/// still keeps a plugin from pulling a large file into its memory.
pub const MAX_RESOLV_CONF_BYTES: u64 = 64 * 1024;

/// Checks that `path` is absolute and has only normal components, so the
/// policy checks the same name that the kernel resolves.
pub(super) fn check_path(path: &str) -> Result<(), HostError> {
    let invalid = |reason: &str| {
        HostError::Invalid(format!(
            "invalid resolv.conf path {path:?}: {reason}: name the file by its absolute path, such as /etc/resolv.conf"
        ))
    };
    let parsed = Path::new(path);
    if !parsed.is_absolute() {
        return Err(invalid("not absolute"));
    }
    // `Path::components` drops inner `.` components, so they are looked for
    // in the text.
    let dotted = path.split('/').any(|part| part == "." || part == "..");
    if dotted || path.contains('\0') {
        return Err(invalid("it contains a . or .. component or a NUL byte"));
    }
    if !parsed
        .components()
        .all(|part| matches!(part, Component::RootDir | Component::Normal(_)))
    {
        return Err(invalid("it contains a component that is not a plain name"));
    }
    Ok(())
}

/// Returns the file `path` leads to after symbolic links, or `None` when
/// that cannot be resolved (the read then fails with the reason).
pub(super) fn target(path: &str) -> Option<String> {
    let resolved = std::fs::canonicalize(path).ok()?;
    resolved.into_os_string().into_string().ok()
}

/// Reads a resolv.conf: a regular UTF-8 file of at most
/// [`MAX_RESOLV_CONF_BYTES`] bytes.
pub(super) fn read(path: &Path) -> Result<String, HostError> {
    let failed = |error: std::io::Error| match error.kind() {
        ErrorKind::NotFound => {
            HostError::NotFound(format!("resolv.conf {} does not exist", path.display()))
        }
        _ => HostError::Failed(format!(
            "failed to read resolv.conf {}: {error}",
            path.display()
        )),
    };

    let file = std::fs::File::open(path).map_err(failed)?;
    let metadata = file.metadata().map_err(failed)?;
    if !metadata.is_file() {
        return Err(HostError::Invalid(format!(
            "resolv.conf {} is not a regular file: name a file",
            path.display()
        )));
    }

    // Reading one byte past the limit detects a file above the limit
    // without trusting a size taken before the read.
    let mut bytes = Vec::new();
    file.take(MAX_RESOLV_CONF_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if bytes.len() as u64 > MAX_RESOLV_CONF_BYTES {
        return Err(HostError::Invalid(format!(
            "resolv.conf {} is larger than the limit of {MAX_RESOLV_CONF_BYTES} bytes: name a resolv.conf file",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|_| {
        HostError::Invalid(format!(
            "resolv.conf {} is not UTF-8 text: name a resolv.conf file",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules() {
        assert!(check_path("/etc/resolv.conf").is_ok());
        for bad in [
            "etc/resolv.conf",
            "/etc/../etc/shadow",
            "/etc/./resolv.conf",
            "",
        ] {
            let error = check_path(bad).unwrap_err();
            assert!(
                matches!(&error, HostError::Invalid(message) if message.contains("invalid resolv.conf path")),
                "{bad:?}: {error:?}"
            );
        }
    }

    #[test]
    fn read_checks_kind_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let small = dir.path().join("resolv.conf");
        std::fs::write(&small, "nameserver 192.0.2.53\n").unwrap();
        let large = dir.path().join("large.conf");
        std::fs::write(&large, vec![b'#'; MAX_RESOLV_CONF_BYTES as usize + 1]).unwrap();

        assert_eq!(read(&small).unwrap(), "nameserver 192.0.2.53\n");
        assert!(matches!(read(&large), Err(HostError::Invalid(m)) if m.contains("larger than")));
        assert!(
            matches!(read(dir.path()), Err(HostError::Invalid(m)) if m.contains("not a regular file"))
        );
        assert!(matches!(
            read(&dir.path().join("absent")),
            Err(HostError::NotFound(_))
        ));
    }

    #[test]
    fn target_follows_links() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("real.conf");
        std::fs::write(&file, "").unwrap();
        let link = dir.path().join("link.conf");
        std::os::unix::fs::symlink(&file, &link).unwrap();

        let resolved = std::fs::canonicalize(&file).unwrap();
        assert_eq!(target(link.to_str().unwrap()).as_deref(), resolved.to_str());
        assert_eq!(target(dir.path().join("absent").to_str().unwrap()), None);
    }
}
