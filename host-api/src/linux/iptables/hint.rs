//! The POSTROUTING rule counts of one network namespace, kept in a file so
//! that the next cniwasm process reads the nat table the way that suits its
//! size. A first ADD reads only small chains, so without the file a new
//! process would not know that the table is large.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// The hint file of the calling thread's network namespace, or none when that
/// namespace could not be identified.
pub(super) struct SizeHint {
    path: Option<PathBuf>,
}

impl SizeHint {
    /// Names the file after the device and inode of the calling thread's
    /// network namespace. A namespace created after another was deleted may
    /// get its inode and find a stale count, which costs time but never
    /// changes a script.
    pub(super) fn for_current_netns(dir: &Path) -> Self {
        let identity = std::fs::File::open("/proc/thread-self/ns/net")
            .and_then(|file| Ok(rustix::fs::fstat(file.as_fd())?));
        let path = match identity {
            Ok(stat) => Some(dir.join(format!("nat-size-{}-{}", stat.st_dev, stat.st_ino))),
            Err(err) => {
                tracing::debug!(error = %err, "no nat size hint: network namespace unknown");
                None
            }
        };
        Self { path }
    }

    /// Returns the counts in the file, IPv4 first, or zeros when it is
    /// missing or unreadable.
    pub(super) fn load(&self) -> [usize; 2] {
        let Some(path) = &self.path else {
            return [0, 0];
        };
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut counts = text
            .split_whitespace()
            .map(|word| word.parse().unwrap_or(0));
        [counts.next().unwrap_or(0), counts.next().unwrap_or(0)]
    }

    /// Removes the file, as when the table became small again. A missing
    /// file is not an error.
    pub(super) fn clear(&self) {
        let Some(path) = &self.path else {
            return;
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::debug!(error = %err, path = %path.display(), "failed to remove the nat size hint");
            }
        }
    }

    /// Writes the counts. The caller holds the iptables lock, so writers do
    /// not interleave. A failure is only logged, since the file is an
    /// optimisation.
    pub(super) fn store(&self, counts: [usize; 2]) {
        let Some(path) = &self.path else {
            return;
        };
        if let Err(err) = std::fs::write(path, format!("{} {}\n", counts[0], counts[1])) {
            tracing::debug!(error = %err, path = %path.display(), "failed to write the nat size hint");
        }
    }
}
