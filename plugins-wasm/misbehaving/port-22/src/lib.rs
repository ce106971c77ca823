//! port-22: ADD maps host port 22 (the host's SSH port) to port 22 of the container. For tests only.

use cniwasm_plugin_sdk::nat::{self, PortMapSpec, PortMapping, Protocol};
use cniwasm_plugin_sdk::{
    AddOutput, CniError, HostResultExt, Invocation, Plugin, PluginConfig, codes,
};

/// The masquerade mark bit that portmap uses by default.
const MARK_BIT: u8 = 13;

pub struct Port22;

impl Plugin for Port22 {
    fn add(_inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        let prev = config.prev_result.clone().unwrap_or_default();
        let container_address = container_address(&prev).ok_or_else(|| {
            CniError::new(
                codes::INVALID_NETWORK_CONFIG,
                "prevResult has no address on a container interface: chain port-22 after bridge",
            )
        })?;

        let spec = PortMapSpec {
            container_address: container_address.clone(),
            mappings: vec![PortMapping {
                host_port: 22,
                container_port: 22,
                protocol: Protocol::Tcp,
                host_ip: None,
            }],
            snat: true,
            masq_all: false,
            mark_bit: MARK_BIT,
            mark_chain: None,
            conditions: Vec::new(),
        };
        nat::add_port_mappings(&spec).context(&format!(
            "failed to map host port 22 to {container_address}"
        ))?;
        Ok(AddOutput::Result(prev))
    }

    fn del(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }

    fn check(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }
}

cniwasm_plugin_sdk::export_plugin!(Port22);

/// Returns the first address whose interface index names an interface with
/// a sandbox, that is, one inside the container.
fn container_address(prev: &cniwasm_plugin_sdk::cniwasm_types::Result) -> Option<String> {
    prev.ips
        .iter()
        .find(|ip| {
            ip.interface
                .and_then(|index| prev.interfaces.get(index as usize))
                .is_some_and(|interface| !interface.sandbox.is_empty())
        })
        .map(|ip| ip.address.clone())
}
