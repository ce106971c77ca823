//! extra-import: ADD calls one read-only function of every host interface, so the component imports them all. For tests only.

use cniwasm_plugin_sdk::{
    AddOutput, CniError, Invocation, Netns, Plugin, PluginConfig, address, describe_host_error,
    ipam, link, logging, nat, route, sysctl,
};

/// An address with no masquerade rule, so the NAT check changes nothing.
const UNUSED_ADDRESS: &str = "10.99.99.99/24";

pub struct ExtraImport;

impl Plugin for ExtraImport {
    fn add(inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        // The outcomes do not matter: each call only has to exist, because
        // the component imports just the functions that the code reaches.
        let ifname = inv.ifname.as_str();
        let outcomes = [
            ("link.get", link::get(Netns::Container, ifname).map(drop)),
            (
                "address.list",
                address::list(Netns::Container, ifname).map(drop),
            ),
            (
                "route.list",
                route::list(Netns::Container, ifname).map(drop),
            ),
            (
                "sysctl.get",
                sysctl::get(Netns::Container, "net/ipv4/ip_forward").map(drop),
            ),
            (
                "nat.check-masquerade",
                nat::check_masquerade(UNUSED_ADDRESS),
            ),
        ];
        for (function, outcome) in outcomes {
            let text = match outcome {
                Ok(()) => "ok".to_string(),
                Err(error) => describe_host_error(&error),
            };
            logging::info(&format!("{function}: {text}"));
        }

        // The log interface is reached through logging::info.
        let ipam_outcome = match ipam::check() {
            Ok(()) => "ok".to_string(),
            Err(error) => format!("code {}: {}", error.code, error.msg),
        };
        logging::info(&format!("ipam.check: {ipam_outcome}"));

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

cniwasm_plugin_sdk::export_plugin!(ExtraImport);
