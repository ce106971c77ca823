//! [`Sysctl`] over files under `/proc/sys`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::netns::{NetnsHandles, with_namespace};
use crate::kernel::{KernelError, KernelErrorKind, Namespace, Sysctl};

const PROC_SYS: &str = "/proc/sys";

/// Kernel parameters under `/proc/sys/net`. A `/proc/sys/net` file shows the
/// network namespace of the thread that opens it, so container keys are read
/// and written with the thread switched into the container namespace.
pub struct ProcSysctl {
    namespaces: Arc<NetnsHandles>,
}

impl ProcSysctl {
    /// Opens the calling thread's namespace as the host and, if the path is
    /// given and exists, the container namespace at `container_netns`.
    pub fn open(container_netns: Option<&Path>) -> Result<Self, KernelError> {
        Ok(Self::with_handles(Arc::new(NetnsHandles::open(
            container_netns,
        )?)))
    }

    /// Uses namespaces that a [`super::LinuxNetlink`] may share.
    pub fn with_handles(namespaces: Arc<NetnsHandles>) -> Self {
        Self { namespaces }
    }

    fn access<R>(
        &self,
        ns: Namespace,
        operation: &str,
        step: impl FnOnce() -> io::Result<R>,
    ) -> Result<R, KernelError> {
        let fd = self.namespaces.fd(ns, operation)?;
        let result = with_namespace(fd, step).and_then(|result| result);
        result.map_err(|err| KernelError::new(io_kind(&err), ns, operation, err))
    }
}

impl Sysctl for ProcSysctl {
    fn get(&mut self, ns: Namespace, key: &str) -> Result<String, KernelError> {
        let operation = format!("read sysctl {key}");
        let path = sysctl_path(key).map_err(|reason| invalid(ns, &operation, reason))?;

        let value = self.access(ns, &operation, || std::fs::read_to_string(&path))?;
        Ok(value.trim_end_matches('\n').to_string())
    }

    fn set(&mut self, ns: Namespace, key: &str, value: &str) -> Result<(), KernelError> {
        let operation = format!("set sysctl {key} to {value:?}");
        let path = sysctl_path(key).map_err(|reason| invalid(ns, &operation, reason))?;

        self.access(ns, &operation, || std::fs::write(&path, value))
    }
}

fn invalid(ns: Namespace, operation: &str, reason: String) -> KernelError {
    KernelError::new(KernelErrorKind::Invalid, ns, operation, reason)
}

fn io_kind(err: &io::Error) -> KernelErrorKind {
    match err.raw_os_error() {
        Some(errno) => super::kind_from_errno(errno),
        None => KernelErrorKind::Failed,
    }
}

/// Maps a key to its file under `/proc/sys`. A key with a slash is taken as
/// is, because interface names in keys may contain dots
/// (`net/ipv4/conf/eth0.100/forwarding`). A key without one is in dot form
/// (`net.ipv4.ip_forward`). Only keys under `net/` are accepted, and none
/// with an empty, `.` or `..` component.
pub(crate) fn sysctl_path(key: &str) -> Result<PathBuf, String> {
    let slash_form = match key.contains('/') {
        true => key.to_string(),
        false => key.replace('.', "/"),
    };

    if !slash_form.starts_with("net/") {
        return Err(format!(
            "invalid sysctl key {key:?}: only keys under net/ are allowed"
        ));
    }
    let bad_component = slash_form
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == ".." || part.contains('\0'));
    if bad_component {
        return Err(format!(
            "invalid sysctl key {key:?}: empty, \".\" and \"..\" components are not allowed"
        ));
    }

    Ok(Path::new(PROC_SYS).join(slash_form))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_dot_form_converts() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
    }

    #[test]
    fn key_slash_form_keeps_dots() {
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/forwarding").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
    }

    #[test]
    fn key_outside_net_rejected() {
        for key in [
            "kernel/hostname",
            "kernel.hostname",
            "/net/ipv4/ip_forward",
            "netx/a",
        ] {
            assert!(sysctl_path(key).is_err(), "{key} accepted");
        }
    }

    #[test]
    fn key_traversal_rejected() {
        for key in [
            "net/../kernel/hostname",
            "net/ipv4/./ip_forward",
            "net//ipv4",
            "net/ipv4/",
        ] {
            assert!(sysctl_path(key).is_err(), "{key} accepted");
        }
    }
}
