use std::path::Path;

use cniwasm_host_api::kernel::{Kernel, KernelError};
use cniwasm_host_api::linux::{FirewallOptions, IptablesFirewall, LinuxNetlink, ProcSysctl};

/// Opens the kernel for one chain operation on the container namespace at
/// `netns` (`None` when there is none, as in a DEL after it was removed).
pub trait KernelFactory: Send + Sync {
    fn open(&self, netns: Option<&Path>) -> Result<Kernel, KernelError>;
}

/// The real kernel: rtnetlink, /proc/sys and iptables.
pub struct LinuxKernelFactory;

impl KernelFactory for LinuxKernelFactory {
    fn open(&self, netns: Option<&Path>) -> Result<Kernel, KernelError> {
        Ok(Kernel {
            netlink: Box::new(LinuxNetlink::open(netns)?),
            sysctl: Box::new(ProcSysctl::open(netns)?),
            firewall: Box::new(IptablesFirewall::new(FirewallOptions::default())),
        })
    }
}
