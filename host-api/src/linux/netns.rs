//! Network namespace handles and a scoped switch of the calling thread into
//! one of them.
//!
//! Sockets and `/proc/sys/net` files belong to the network namespace of the
//! thread that creates or opens them, so the kernel implementations switch one
//! thread into the container namespace only for that step and switch back.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use crate::kernel::{KernelError, KernelErrorKind, Namespace};

/// The namespace of the calling thread, as procfs exposes it per thread.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// Open descriptors of the host and container network namespaces.
#[derive(Debug)]
pub struct NetnsHandles {
    /// The namespace of the thread that opened the handles.
    pub host: OwnedFd,
    /// The container namespace. It is `None` when no path was given or the
    /// path did not exist, as for a DEL after the container runtime removed it.
    pub container: Option<OwnedFd>,
    /// The path the container namespace was requested from, for messages.
    pub container_path: Option<PathBuf>,
}

impl NetnsHandles {
    /// Opens the calling thread's namespace as the host and, if given, the
    /// container namespace at `container_netns`. A path that does not exist
    /// leaves the container absent, and any other failure to open it is an error.
    pub fn open(container_netns: Option<&Path>) -> Result<Self, KernelError> {
        let host = open_namespace(Path::new(THREAD_NETNS)).map_err(|err| {
            KernelError::new(
                KernelErrorKind::Failed,
                Namespace::Host,
                format!("open {THREAD_NETNS}"),
                err,
            )
        })?;

        let container = match container_netns {
            None => None,
            Some(path) => match open_namespace(path) {
                Ok(fd) => Some(fd),
                Err(err) if err.kind() == io::ErrorKind::NotFound => None,
                Err(err) => {
                    return Err(KernelError::new(
                        KernelErrorKind::Failed,
                        Namespace::Container,
                        format!("open network namespace {}", path.display()),
                        err,
                    ));
                }
            },
        };

        Ok(Self {
            host,
            container,
            container_path: container_netns.map(Path::to_path_buf),
        })
    }

    pub fn has_container(&self) -> bool {
        self.container.is_some()
    }

    /// Returns the descriptor of `ns`, or a `NotFound` error naming the
    /// container path when the container namespace is not open.
    pub fn fd(&self, ns: Namespace, operation: &str) -> Result<BorrowedFd<'_>, KernelError> {
        match ns {
            Namespace::Host => Ok(self.host.as_fd()),
            Namespace::Container => match &self.container {
                Some(fd) => Ok(fd.as_fd()),
                None => Err(self.container_missing(operation)),
            },
        }
    }

    /// Builds the `NotFound` error for an operation on an absent container namespace.
    pub fn container_missing(&self, operation: &str) -> KernelError {
        let reason = match &self.container_path {
            Some(path) => format!("network namespace {} not found", path.display()),
            None => "no container network namespace was given".to_string(),
        };
        KernelError::new(
            KernelErrorKind::NotFound,
            Namespace::Container,
            operation,
            reason,
        )
    }
}

fn open_namespace(path: &Path) -> io::Result<OwnedFd> {
    // std opens with O_CLOEXEC, so iptables children do not inherit the fd.
    Ok(File::open(path)?.into())
}

/// Runs `step` with the calling thread in the network namespace `target`, then
/// moves the thread back to the namespace it was in, also when `step` panics.
/// When the thread already is in `target`, `step` runs without a switch.
pub fn with_namespace<R>(target: BorrowedFd<'_>, step: impl FnOnce() -> R) -> io::Result<R> {
    let original = open_namespace(Path::new(THREAD_NETNS))?;
    if same_namespace(original.as_fd(), target)? {
        return Ok(step());
    }

    move_into_link_name_space(target, Some(LinkNameSpaceType::Network))?;
    let _restore = RestoreNamespace { original };

    Ok(step())
}

fn same_namespace(left: BorrowedFd<'_>, right: BorrowedFd<'_>) -> io::Result<bool> {
    let left = rustix::fs::fstat(left)?;
    let right = rustix::fs::fstat(right)?;
    Ok(left.st_dev == right.st_dev && left.st_ino == right.st_ino)
}

/// Moves the thread back to `original` when dropped.
struct RestoreNamespace {
    original: OwnedFd,
}

impl Drop for RestoreNamespace {
    fn drop(&mut self) {
        let restored =
            move_into_link_name_space(self.original.as_fd(), Some(LinkNameSpaceType::Network));
        if let Err(err) = restored {
            // A thread left in the container namespace would apply later host
            // changes (iptables, links) to the container, so stop the process.
            tracing::error!(error = %err, "failed to restore the network namespace of the thread");
            std::process::abort();
        }
    }
}
