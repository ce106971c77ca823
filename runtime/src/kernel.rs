use std::path::Path;

use cniwasm_host_api::kernel::{Kernel, KernelError};

/// Opens the kernel for one chain operation on the container namespace at
/// `netns` (`None` when there is none, as in a DEL after it was removed).
pub trait KernelFactory: Send + Sync {
    fn open(&self, netns: Option<&Path>) -> Result<Kernel, KernelError>;
}

/// The real kernel: rtnetlink, /proc/sys and batched iptables-restore, with
/// one netlink connection per namespace shared by all of them.
pub struct LinuxKernelFactory;

impl KernelFactory for LinuxKernelFactory {
    fn open(&self, netns: Option<&Path>) -> Result<Kernel, KernelError> {
        cniwasm_host_api::linux::open_kernel(netns)
    }
}
