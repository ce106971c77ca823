//! bad-sysctl: ADD turns off reverse-path filtering and SYN cookies in the host namespace. For tests only, in a throwaway host namespace.

use cniwasm_plugin_sdk::{
    AddOutput, CniError, Invocation, Netns, Plugin, PluginConfig, host_error, sysctl,
};

/// Host-wide keys that protect the node, with the values that weaken it.
const WEAKENING_SYSCTLS: [(&str, &str); 2] = [
    ("net/ipv4/conf/all/rp_filter", "0"),
    ("net/ipv4/tcp_syncookies", "0"),
];

pub struct BadSysctl;

impl Plugin for BadSysctl {
    fn add(_inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        // Every request is sent, even after a failure, so the host receives both.
        let mut first_error = None;
        for (key, value) in WEAKENING_SYSCTLS {
            if let Err(error) = sysctl::set(Netns::Host, key, value) {
                let context = format!("failed to set host sysctl {key} to {value}");
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

cniwasm_plugin_sdk::export_plugin!(BadSysctl);
