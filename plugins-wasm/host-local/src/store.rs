//! Allocation state as files in one directory, in the reference plugin's
//! layout: `<ip>` contains `<containerID>\r\n<ifname>`, and
//! `last_reserved_ip.<set index>` contains the address reserved last in that
//! range set.
//!
//! The plugin runs with the network's directory preopened at `/state`, and
//! the host holds the directory's lock for the whole call, so the store does
//! no locking of its own. Commands that look at every allocation get all
//! files from the host's `ipam-store` interface in one call. A single known
//! file is read or written through WASI.

use std::fs;
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cniwasm_plugin_sdk::ipam_store::StoreFiles;
use cniwasm_plugin_sdk::{HostError, describe_host_error};

const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";

/// The state directory of one network. In the wasm component it must be
/// [`crate::STATE_DIR`], the one directory the host's `ipam-store`
/// interface reads.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Creates the file of `address` for the attachment. Returns `Ok(false)`
    /// when another attachment owns the address already.
    pub fn reserve(
        &self,
        address: IpAddr,
        owner: &Owner,
        set_index: usize,
    ) -> Result<bool, String> {
        let path = self.dir.join(address.to_string());
        // TODO: WASI cannot set the file mode; the reference creates these
        // files with mode 0600, here the host's umask decides.
        let mut file = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::AlreadyExists => return Ok(false),
            Err(error) => return Err(io_message("create", &path, &error)),
        };

        let content = owner.file_content();
        if let Err(error) = file.write_all(content.as_bytes()) {
            let _ = fs::remove_file(&path);
            return Err(io_message("write", &path, &error));
        }

        let last = self.last_reserved_path(set_index);
        if let Err(error) = fs::write(&last, address.to_string()) {
            let _ = fs::remove_file(&path);
            return Err(io_message("write", &last, &error));
        }
        Ok(true)
    }

    /// Returns the address reserved last in the range set, or `None` when
    /// there is none or the file does not contain an address.
    pub fn last_reserved(&self, set_index: usize) -> Option<IpAddr> {
        let text = fs::read_to_string(self.last_reserved_path(set_index)).ok()?;
        text.trim().parse().ok()
    }

    /// Returns the addresses held by the attachment.
    pub fn addresses_of(&self, owner: &Owner) -> Result<Vec<IpAddr>, String> {
        let mut addresses = Vec::new();
        for (name, content) in self.allocation_files()? {
            if content.trim() == owner.file_content()
                && let Ok(address) = name.parse()
            {
                addresses.push(address);
            }
        }
        Ok(addresses)
    }

    /// Tells whether the attachment owns any address, also in the older
    /// file format that contains only the container id.
    pub fn holds_any(&self, owner: &Owner) -> Result<bool, String> {
        let files = self.allocation_files()?;
        let current = owner.file_content();
        Ok(files.iter().any(|(_, content)| {
            content.trim() == current || content.trim() == owner.container_id.trim()
        }))
    }

    /// Deletes every file of the attachment. When none matches, deletes the
    /// files in the older format that contain only the container id.
    pub fn release(&self, owner: &Owner) -> Result<(), String> {
        let files = self.allocation_files()?;
        let current = owner.file_content();
        let mut matched: Vec<&String> = files
            .iter()
            .filter(|(_, content)| content.trim() == current)
            .map(|(name, _)| name)
            .collect();
        if matched.is_empty() {
            matched = files
                .iter()
                .filter(|(_, content)| content.trim() == owner.container_id.trim())
                .map(|(name, _)| name)
                .collect();
        }

        let mut errors = Vec::new();
        for name in matched {
            let path = self.dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::NotFound => {}
                Err(error) => errors.push(io_message("delete", &path, &error)),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Fails unless the directory can be listed: the least every command
    /// needs. A missing directory fails too, unlike in the other calls.
    pub fn check_usable(&self) -> Result<(), String> {
        fs::read_dir(&self.dir)
            .map(drop)
            .map_err(|error| io_message("list", &self.dir, &error))
    }

    /// Lists `(file name, content)` of the regular files that may be
    /// allocations; `last_reserved_ip.*` files and files that are not UTF-8
    /// text are skipped. A missing directory has no allocations.
    fn allocation_files(&self) -> Result<Vec<(String, String)>, String> {
        let listing = match read_files(&self.dir) {
            Ok(listing) => listing,
            Err(HostError::NotFound(_)) => return Ok(Vec::new()),
            Err(error) => {
                return Err(format!(
                    "failed to list {}: {}",
                    self.dir.display(),
                    describe_host_error(&error)
                ));
            }
        };
        let is_allocation = |name: &str| !name.starts_with(LAST_RESERVED_PREFIX);

        let mut files = Vec::new();
        for file in listing
            .small
            .into_iter()
            .filter(|file| is_allocation(&file.name))
        {
            if let Ok(content) = String::from_utf8(file.contents) {
                files.push((file.name, content));
            }
        }
        // The host returns only the names of files above its size limit,
        // which no reservation reaches unless its container id has
        // thousands of bytes. A file that vanished or is unreadable cannot
        // belong to the attachment being served, so it is skipped.
        for name in listing.large.into_iter().filter(|name| is_allocation(name)) {
            if let Ok(content) = fs::read_to_string(self.dir.join(&name)) {
                files.push((name, content));
            }
        }
        Ok(files)
    }

    fn last_reserved_path(&self, set_index: usize) -> PathBuf {
        self.dir.join(format!("{LAST_RESERVED_PREFIX}{set_index}"))
    }
}

/// Lists the state directory through the host, in one call. The host serves
/// only the directory preopened at [`crate::STATE_DIR`].
#[cfg(target_arch = "wasm32")]
fn read_files(_dir: &Path) -> Result<StoreFiles, HostError> {
    cniwasm_plugin_sdk::ipam_store::read_files()
}

/// Lists `dir` by the rules of the host's `ipam-store.read-files`, for the
/// unit tests, which run natively where no host serves the call.
#[cfg(not(target_arch = "wasm32"))]
fn read_files(dir: &Path) -> Result<StoreFiles, HostError> {
    use cniwasm_plugin_sdk::ipam_store::StoreFile;

    // The host's limit, MAX_IPAM_STORE_FILE_BYTES in cniwasm-host-api.
    const MAX_FILE_BYTES: usize = 4096;
    let failed = |error: std::io::Error| match error.kind() {
        ErrorKind::NotFound => HostError::NotFound(io_message("list", dir, &error)),
        _ => HostError::Failed(io_message("list", dir, &error)),
    };

    let mut files = StoreFiles {
        small: Vec::new(),
        large: Vec::new(),
    };
    for entry in fs::read_dir(dir).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let regular = entry.file_type().map_err(failed)?.is_file();
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !regular {
            continue;
        }
        let contents = fs::read(entry.path()).map_err(failed)?;
        if contents.len() > MAX_FILE_BYTES {
            files.large.push(name);
        } else {
            files.small.push(StoreFile { name, contents });
        }
    }
    Ok(files)
}

/// The attachment that owns an allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
}

impl Owner {
    fn file_content(&self) -> String {
        format!("{}\r\n{}", self.container_id, self.ifname)
            .trim()
            .to_string()
    }
}

fn io_message(action: &str, path: &Path, error: &std::io::Error) -> String {
    format!("failed to {action} {}: {error}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(id: &str, ifname: &str) -> Owner {
        Owner {
            container_id: id.into(),
            ifname: ifname.into(),
        }
    }

    #[test]
    fn usable_needs_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();

        assert_eq!(Store::new(dir.path()).check_usable(), Ok(()));
        let error = Store::new(&file).check_usable().unwrap_err();
        assert!(error.starts_with(&format!("failed to list {}: ", file.display())));
        assert!(
            Store::new(dir.path().join("absent"))
                .check_usable()
                .is_err()
        );
    }

    #[test]
    fn reserve_writes_reference_layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let address: IpAddr = "10.1.2.2".parse().unwrap();

        assert_eq!(store.reserve(address, &owner("dummy", "eth0"), 0), Ok(true));

        let content = fs::read_to_string(dir.path().join("10.1.2.2")).unwrap();
        assert_eq!(content, "dummy\r\neth0");
        let last = fs::read_to_string(dir.path().join("last_reserved_ip.0")).unwrap();
        assert_eq!(last, "10.1.2.2");
    }

    #[test]
    fn reserve_taken_address_returns_false() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let address: IpAddr = "10.1.2.2".parse().unwrap();
        store.reserve(address, &owner("a", "eth0"), 0).unwrap();

        assert_eq!(store.reserve(address, &owner("b", "eth0"), 0), Ok(false));
    }

    #[test]
    fn release_matches_id_and_ifname() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store
            .reserve("10.1.2.2".parse().unwrap(), &owner("a", "eth0"), 0)
            .unwrap();
        store
            .reserve("10.1.2.3".parse().unwrap(), &owner("a", "eth1"), 0)
            .unwrap();

        store.release(&owner("a", "eth0")).unwrap();

        assert!(!dir.path().join("10.1.2.2").exists());
        assert!(dir.path().join("10.1.2.3").exists());
    }

    #[test]
    fn release_handles_legacy_and_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("10.1.2.7"), "legacy-id\n").unwrap();
        fs::write(dir.path().join("10.1.2.8"), "  b\r\neth0\n").unwrap();
        let store = Store::new(dir.path());

        store.release(&owner("legacy-id", "eth0")).unwrap();
        store.release(&owner("b", "eth0")).unwrap();

        assert!(!dir.path().join("10.1.2.7").exists());
        assert!(!dir.path().join("10.1.2.8").exists());
    }

    #[test]
    fn large_reservation_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let long_id = "x".repeat(5000);
        fs::write(dir.path().join("10.1.2.9"), format!("{long_id}\r\neth0")).unwrap();
        let store = Store::new(dir.path());

        let addresses = store.addresses_of(&owner(&long_id, "eth0")).unwrap();

        assert_eq!(addresses, ["10.1.2.9".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn scan_skips_directories_and_other_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("10.1.2.2")).unwrap();
        fs::write(dir.path().join("10.1.2.2/inner"), "a\r\neth0").unwrap();
        fs::write(dir.path().join("10.1.2.3"), vec![0xff; 8]).unwrap();
        fs::write(dir.path().join("last_reserved_ip.0"), "a\r\neth0").unwrap();
        fs::write(dir.path().join("10.1.2.4"), "a\r\neth0").unwrap();
        let store = Store::new(dir.path());

        let addresses = store.addresses_of(&owner("a", "eth0")).unwrap();

        assert_eq!(addresses, ["10.1.2.4".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn missing_directory_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("absent"));

        assert_eq!(store.addresses_of(&owner("a", "eth0")), Ok(Vec::new()));
        assert_eq!(store.holds_any(&owner("a", "eth0")), Ok(false));
        assert_eq!(store.release(&owner("a", "eth0")), Ok(()));
    }

    #[test]
    fn release_unknown_id_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert_eq!(store.release(&owner("nobody", "eth0")), Ok(()));
    }
}
