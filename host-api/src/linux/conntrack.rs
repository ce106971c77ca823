//! Removal of stale UDP flows after port mappings change, with the
//! `conntrack` tool of conntrack-tools.
//!
//! A UDP flow to a host port keeps its conntrack entry, and with it the DNAT
//! to the old container, for as long as packets keep arriving. The kernel's
//! defaults keep it 30 s after the last packet, 120 s once replies were seen. A container that takes over the host port
//! would never see those packets, so the reference portmap plugin deletes
//! the UDP entries of each mapped host port after it installs the rules.

use std::process::{Command, Stdio};

use crate::kernel::{KernelError, KernelErrorKind, Namespace};

const COMMAND: &str = "conntrack";

/// Deletes the conntrack entries of UDP flows whose original destination
/// port is one of `ports`, in IPv6 when `ipv6` is set and else in IPv4, in
/// the calling thread's network namespace. Failures are logged and not returned: the rules are
/// in place, and only flows that started before them keep their old target.
pub(crate) fn flush_udp_ports(ipv6: bool, ports: &[u16], operation: &str) {
    for port in ports {
        if let Err(error) = flush_udp_port(ipv6, *port, operation) {
            tracing::warn!(%error, port, "stale UDP flows to the host port may still reach the old container");
        }
    }
}

fn flush_udp_port(ipv6: bool, port: u16, operation: &str) -> Result<(), KernelError> {
    let family = if ipv6 { "ipv6" } else { "ipv4" };
    let port_text = port.to_string();
    let failed = |reason: String| {
        KernelError::new(KernelErrorKind::Failed, Namespace::Host, operation, reason)
    };

    let output = Command::new(COMMAND)
        .args([
            "-D",
            "-f",
            family,
            "-p",
            "udp",
            "--orig-port-dst",
            &port_text,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| {
            failed(format!(
                "run {COMMAND}: {err} (install conntrack-tools, Debian package conntrack)"
            ))
        })?;

    // conntrack exits with status 1 when no entry matched.
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() || stderr.contains("0 flow entries have been deleted") {
        return Ok(());
    }
    Err(failed(format!(
        "{COMMAND} -D -f {family} -p udp --orig-port-dst {port} failed with {}: {}",
        output.status,
        stderr.trim()
    )))
}
