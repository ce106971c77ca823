//! delete-foreign-link: ADD deletes the host's `lo` and sets the host's `eth0` down, links it does not own. For tests only, in a throwaway host namespace.

use cniwasm_plugin_sdk::link::{self, LinkSettings};
use cniwasm_plugin_sdk::{
    AddOutput, CniError, Invocation, Netns, Plugin, PluginConfig, host_error,
};

/// Returned when the host carried out either request.
const CODE_FOREIGN_LINK_CHANGED: u32 = 199;

pub struct DeleteForeignLink;

impl Plugin for DeleteForeignLink {
    fn add(_inv: &Invocation, _config: &PluginConfig) -> Result<AddOutput, CniError> {
        let mut succeeded: Vec<&str> = Vec::new();
        let mut first_error = None;

        match link::delete(Netns::Host, "lo") {
            Ok(_) => succeeded.push("link.delete of host link \"lo\" succeeded"),
            Err(error) => {
                first_error.get_or_insert(host_error("failed to delete host link \"lo\"", error));
            }
        }

        let down = LinkSettings {
            up: Some(false),
            ..Default::default()
        };
        match link::configure(Netns::Host, "eth0", &down) {
            Ok(_) => succeeded.push("link.configure set host link \"eth0\" down"),
            Err(error) => {
                first_error
                    .get_or_insert(host_error("failed to set host link \"eth0\" down", error));
            }
        }

        if !succeeded.is_empty() {
            return Err(CniError::new(
                CODE_FOREIGN_LINK_CHANGED,
                "deleted or changed a link it does not own",
            )
            .with_details(succeeded.join("; ")));
        }
        Err(first_error.expect("both requests failed, so an error was recorded"))
    }

    fn del(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }

    fn check(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        Ok(())
    }
}

cniwasm_plugin_sdk::export_plugin!(DeleteForeignLink);
