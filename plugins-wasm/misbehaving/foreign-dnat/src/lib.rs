//! foreign-dnat: ADD maps host port 18080 to 10.99.99.99:80, an address that is not assigned to this container. For tests only.

use cniwasm_plugin_sdk::nat::{self, PortMapSpec, PortMapping, Protocol};
use cniwasm_plugin_sdk::{AddOutput, CniError, HostResultExt, Invocation, Plugin, PluginConfig};

/// An address in no test's IPAM range.
const FOREIGN_ADDRESS: &str = "10.99.99.99/24";

pub struct ForeignDnat;

impl Plugin for ForeignDnat {
    fn add(_inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        let spec = PortMapSpec {
            container_address: FOREIGN_ADDRESS.to_string(),
            mappings: vec![PortMapping {
                host_port: 18080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            }],
            snat: true,
            masq_all: false,
            mark_bit: 13,
            mark_chain: None,
            conditions: Vec::new(),
        };
        nat::add_port_mappings(&spec).context(&format!(
            "failed to map host port 18080 to {FOREIGN_ADDRESS}"
        ))?;

        Ok(AddOutput::Result(
            config.prev_result.clone().unwrap_or_default(),
        ))
    }

    fn del(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }

    fn check(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }
}

cniwasm_plugin_sdk::export_plugin!(ForeignDnat);
