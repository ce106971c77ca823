//! The `nft-nat` interface: the nftables backends of portmap and of the
//! bridge's ipMasq. Each call is checked like its `nat` counterpart: the
//! same `portMappings` and `masquerade` policy sections, and the same
//! ownership rule that rules may only point at the attachment's addresses.

use serde_json::json;

use super::cniwasm::host::nft_nat;
use super::convert::{masquerade_sources, nft_port_map_from_wit};
use super::imports::mappings_json;
use super::{Call, HostContext, HostError};
use crate::kernel::{Kernel, Namespace, NftPortMapSpec};
use crate::policy::Request;

type HostResult<T> = wasmtime::Result<Result<T, HostError>>;

impl nft_nat::Host for HostContext {
    fn add_port_mappings(&mut self, spec: nft_nat::NftPortMapSpec) -> HostResult<()> {
        self.nft_port_mapping_call("nft-nat.add-port-mappings", spec)
    }

    fn check_port_mappings(&mut self, spec: nft_nat::NftPortMapSpec) -> HostResult<()> {
        self.nft_port_mapping_call("nft-nat.check-port-mappings", spec)
    }

    fn remove_port_mappings(&mut self) -> HostResult<()> {
        let call = Call {
            operation: "nft-nat.remove-port-mappings",
            arguments: json!({"comment": self.owner.container_id}),
            requests: vec![Request::RemoveNftNat],
        };
        self.dispatch(
            call,
            |_, _| None,
            |kernel, owner| Ok(kernel.nft_nat.remove_port_mappings(owner)?),
        )
    }

    fn add_masquerade(&mut self, addresses: Vec<String>) -> HostResult<()> {
        let sources = match masquerade_sources(&addresses) {
            Ok(sources) => sources,
            Err(error) => return Ok(Err(error)),
        };
        let call = Call {
            operation: "nft-nat.add-masquerade",
            arguments: json!({"addresses": addresses, "comment": self.owner.masquerade_rule_comment()}),
            requests: sources
                .iter()
                .map(|source| Request::NftMasquerade { source: *source })
                .collect(),
        };
        let owner = self.owner.clone();

        self.dispatch(
            call,
            |kernel, rules| {
                sources
                    .iter()
                    .find_map(|source| rules.container_address(kernel, &owner, *source))
            },
            |kernel, owner| Ok(kernel.nft_nat.add_masquerade(owner, &sources)?),
        )
    }

    fn remove_masquerade(&mut self) -> HostResult<()> {
        let call = Call {
            operation: "nft-nat.remove-masquerade",
            arguments: json!({"hash": self.owner.masquerade_rule_hash()}),
            requests: vec![Request::RemoveNftNat],
        };
        self.dispatch(
            call,
            |_, _| None,
            |kernel, owner| Ok(kernel.nft_nat.remove_masquerade(owner)?),
        )
    }
}

impl HostContext {
    /// Serves `add-port-mappings` and `check-port-mappings`.
    fn nft_port_mapping_call(
        &mut self,
        operation: &'static str,
        spec: nft_nat::NftPortMapSpec,
    ) -> HostResult<()> {
        let parsed = match nft_port_map_from_wit(&spec) {
            Ok(parsed) => parsed,
            Err(error) => return Ok(Err(error)),
        };
        let mappings = mappings_json(&parsed.mappings);
        let call = Call {
            operation,
            arguments: json!({"containerAddress": spec.container_address, "mappings": mappings,
                "snat": spec.snat, "masqAll": spec.masq_all, "conditions": spec.conditions,
                "comment": self.owner.container_id}),
            requests: parsed
                .mappings
                .iter()
                .map(|m| Request::NftPortMapping {
                    host_port: m.host_port,
                    host_ip: m.host_ip,
                    protocol: m.protocol.as_str(),
                })
                .collect(),
        };
        let owner = self.owner.clone();
        let adding = operation == "nft-nat.add-port-mappings";

        self.dispatch(
            call,
            |kernel, rules| {
                adding
                    .then(|| rules.container_address(kernel, &owner, parsed.container_address))
                    .flatten()
            },
            |kernel, owner| match adding {
                true => {
                    kernel.nft_nat.add_port_mappings(owner, &parsed)?;
                    enable_localnet(kernel, &parsed)
                }
                false => Ok(kernel.nft_nat.check_port_mappings(owner, &parsed)?),
            },
        )
    }
}

/// Sets `route_localnet` on the host's route device to an IPv4 container
/// with SNAT, so that traffic to a mapped port on 127.0.0.1 can be routed
/// to it, as the reference portmap plugin does for both backends. Like the
/// reference, does nothing when no route leads to the container.
fn enable_localnet(kernel: &mut Kernel, spec: &NftPortMapSpec) -> Result<(), HostError> {
    let container = spec.container_address.addr();
    if !spec.snat || !container.is_ipv4() {
        return Ok(());
    }

    let Some(device) = kernel.netlink.route_device(container)? else {
        tracing::warn!(%container, "route_localnet not set: no route to the container");
        return Ok(());
    };
    let key = format!("net/ipv4/conf/{device}/route_localnet");
    kernel.sysctl.set(Namespace::Host, &key, "1")?;
    Ok(())
}
