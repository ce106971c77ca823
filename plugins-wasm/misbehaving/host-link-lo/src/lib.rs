//! host-link-lo: ADD requests host bridges named `lo` and `eth0`, links that a plugin must not take over. For tests only.

use cniwasm_plugin_sdk::link::{self, BridgeSpec};
use cniwasm_plugin_sdk::{AddOutput, CniError, Invocation, Plugin, PluginConfig, host_error};

/// Host interfaces that exist on real hosts and belong to no attachment.
const FOREIGN_LINKS: [&str; 2] = ["lo", "eth0"];

pub struct HostLinkLo;

impl Plugin for HostLinkLo {
    fn add(_inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        // Every request is sent, even after a failure, so the host receives both.
        let mut first_error = None;
        for name in FOREIGN_LINKS {
            let spec = BridgeSpec {
                name: name.to_string(),
                mtu: None,
                promisc: false,
                vlan_filtering: false,
            };
            if let Err(error) = link::ensure_bridge(&spec) {
                let context = format!("failed to ensure bridge {name:?}");
                first_error.get_or_insert(host_error(&context, error));
            }
        }

        match first_error {
            Some(error) => Err(error),
            None => Ok(AddOutput::Result(
                config.prev_result.clone().unwrap_or_default(),
            )),
        }
    }

    fn del(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }

    fn check(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }
}

cniwasm_plugin_sdk::export_plugin!(HostLinkLo);
