//! host-local: an IPAM plugin that allocates addresses from configured
//! ranges and records each allocation as a file in the network's state
//! directory, with the reference plugin's rules and file layout.
//!
//! The host preopens `<dataDir>/<network>` at `/state` and holds its lock for
//! the whole call. The allocator works on any directory, so its tests run
//! natively:
//!
//! ```text
//! cargo test --target x86_64-unknown-linux-gnu -p host-local
//! ```

pub mod allocator;
pub mod config;
pub mod dns;
pub mod range;
pub mod store;

use cniwasm_plugin_sdk::cniwasm_types::{self, IpConfig};
use cniwasm_plugin_sdk::{AddOutput, CniError, Invocation, Plugin, PluginConfig, codes, logging};

use crate::allocator::Allocator;
use crate::config::IpamConfig;
use crate::range::range_for;
use crate::store::{Owner, Store};

/// Mount point of the network's state directory, preopened by the host.
pub const STATE_DIR: &str = "/state";

/// The host-local plugin.
pub struct HostLocal;

impl Plugin for HostLocal {
    fn add(inv: &Invocation, config: &PluginConfig) -> Result<AddOutput, CniError> {
        let ipam = IpamConfig::parse(config, inv)?;
        // The reference reads the file before allocating, so a bad file
        // leaves no allocation behind.
        let dns = match &ipam.resolv_conf {
            Some(path) => dns::read_resolv_conf(path)?,
            None => Default::default(),
        };

        let mut result = allocate_all(&ipam, &Store::new(STATE_DIR), &owner_of(inv))?;
        result.dns = dns;
        Ok(AddOutput::Result(result))
    }

    fn del(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        IpamConfig::parse(config, inv)?;
        Store::new(STATE_DIR)
            .release(&owner_of(inv))
            .map_err(|error| CniError::new(codes::IO_FAILURE, error))
    }

    fn check(inv: &Invocation, config: &PluginConfig) -> Result<(), CniError> {
        IpamConfig::parse(config, inv)?;
        check_held(&Store::new(STATE_DIR), &owner_of(inv))
    }

    /// Reports whether ADD could run, unlike the reference plugin, whose
    /// STATUS always succeeds. The host checks the data directory on its
    /// side, so this checks only that the directory reached the sandbox.
    fn status(_inv: &Invocation, _config: &PluginConfig) -> Result<(), CniError> {
        check_available(&Store::new(STATE_DIR))
    }
}

cniwasm_plugin_sdk::export_plugin!(HostLocal);

fn owner_of(inv: &Invocation) -> Owner {
    Owner {
        container_id: inv.container_id.clone(),
        ifname: inv.ifname.clone(),
    }
}

/// Allocates one address from each range set, in order. A failure releases
/// the attachment's addresses, so a failed ADD leaves no allocation behind.
pub fn allocate_all(
    ipam: &IpamConfig,
    store: &Store,
    owner: &Owner,
) -> Result<cniwasm_types::Result, CniError> {
    let mut requested = ipam.requested.clone();
    let mut result = cniwasm_types::Result {
        routes: ipam.routes.clone(),
        ..Default::default()
    };

    for (set_index, set) in ipam.range_sets.iter().enumerate() {
        let requested_here = requested
            .iter()
            .position(|address| range_for(set, *address).is_some())
            .map(|position| requested.remove(position));
        let allocator = Allocator {
            set,
            set_index,
            store,
        };

        match allocator.allocate(owner, requested_here) {
            Ok(allocation) => result.ips.push(IpConfig {
                interface: None,
                address: allocation.address.to_string(),
                gateway: allocation.gateway.to_string(),
            }),
            Err(error) => {
                release_after_failure(store, owner);
                return Err(CniError::new(
                    codes::INTERNAL,
                    format!("failed to allocate for range {set_index}: {error}"),
                ));
            }
        }
    }

    if !requested.is_empty() {
        release_after_failure(store, owner);
        let list: Vec<String> = requested.iter().map(ToString::to_string).collect();
        return Err(CniError::new(
            codes::INTERNAL,
            format!(
                "failed to allocate all requested IPs: {}: request addresses inside rangeStart-rangeEnd of a range",
                list.join(" ")
            ),
        ));
    }
    Ok(result)
}

// NOTE: the reference plugin releases only the range sets allocated before
// the failing one, so a repeated ADD that fails in the first set keeps the
// earlier reservation there. This releases every address of the attachment.
fn release_after_failure(store: &Store, owner: &Owner) {
    if let Err(error) = store.release(owner) {
        logging::warn(&format!(
            "failed to release addresses of container {} after a failed ADD: {error}",
            owner.container_id
        ));
    }
}

/// Succeeds when the attachment owns any address. Like the reference
/// plugin, it does not verify which one.
pub fn check_held(store: &Store, owner: &Owner) -> Result<(), CniError> {
    let held = store
        .holds_any(owner)
        .map_err(|error| CniError::new(codes::IO_FAILURE, error))?;
    if held {
        Ok(())
    } else {
        Err(CniError::new(
            codes::INTERNAL,
            format!(
                "host-local: Failed to find address added by container {}",
                owner.container_id
            ),
        ))
    }
}

/// Fails with code 50 (plugin not available) unless the state directory can
/// be listed.
pub fn check_available(store: &Store) -> Result<(), CniError> {
    store.check_usable().map_err(|error| {
        CniError::new(
            codes::PLUGIN_NOT_AVAILABLE,
            format!(
                "host-local cannot use its IPAM state directory: {error}: the host preopens it at {STATE_DIR} unless the node policy withholds it; remove \"ipamState\": false from host-local's policy entry"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use serde_json::{Value, json};

    use super::*;

    fn ipam(value: Value, inv: &Invocation) -> IpamConfig {
        let versions: Vec<String> = cniwasm_plugin_sdk::ALL_VERSIONS
            .iter()
            .map(|v| v.to_string())
            .collect();
        let config = PluginConfig::parse(&value.to_string(), &versions).unwrap();
        IpamConfig::parse(&config, inv).unwrap()
    }

    fn owner(id: &str, ifname: &str) -> Owner {
        Owner {
            container_id: id.into(),
            ifname: ifname.into(),
        }
    }

    fn dual_stack() -> Value {
        json!({"cniVersion": "0.4.0", "name": "mynet", "ipam": {"type": "host-local",
            "ranges": [[{"subnet": "10.1.2.0/24"}, {"subnet": "10.2.2.0/24"}],
                       [{"subnet": "2001:db8:1::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}})
    }

    #[test]
    fn dual_stack_add_matches_reference() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let config = ipam(dual_stack(), &Invocation::default());

        let result = allocate_all(&config, &store, &owner("dummy", "eth0")).unwrap();

        assert_eq!(result.ips[0].address, "10.1.2.2/24");
        assert_eq!(result.ips[0].gateway, "10.1.2.1");
        assert_eq!(result.ips[0].interface, None);
        assert_eq!(result.ips[1].address, "2001:db8:1::2/64");
        assert_eq!(result.ips[1].gateway, "2001:db8:1::1");
        assert_eq!(result.routes.len(), 2);
        let file = fs::read_to_string(dir.path().join("10.1.2.2")).unwrap();
        assert_eq!(file, "dummy\r\neth0");
        let last = fs::read_to_string(dir.path().join("last_reserved_ip.1")).unwrap();
        assert_eq!(last, "2001:db8:1::2");
    }

    #[test]
    fn add_result_renders_version_field() {
        let dir = tempfile::tempdir().unwrap();
        let config = ipam(dual_stack(), &Invocation::default());
        let result = allocate_all(&config, &Store::new(dir.path()), &owner("a", "eth0")).unwrap();

        let json = cniwasm_types::result_to_json(&result, "0.4.0").unwrap();
        assert_eq!(json["ips"][0]["version"], json!("4"));
        assert_eq!(json["ips"][0].get("interface"), None);
    }

    #[test]
    fn same_id_other_ifname_is_independent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let config = ipam(dual_stack(), &Invocation::default());

        let first = allocate_all(&config, &store, &owner("a", "eth0")).unwrap();
        let second = allocate_all(&config, &store, &owner("a", "eth1")).unwrap();
        let third = allocate_all(&config, &store, &owner("b", "eth0")).unwrap();

        assert_eq!(first.ips[0].address, "10.1.2.2/24");
        assert_eq!(second.ips[0].address, "10.1.2.3/24");
        assert_eq!(third.ips[0].address, "10.1.2.4/24");
        assert!(allocate_all(&config, &store, &owner("a", "eth0")).is_err());
    }

    #[test]
    fn repeated_add_finds_reservation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let config = ipam(dual_stack(), &Invocation::default());
        let first = allocate_all(&config, &store, &owner("a", "eth0")).unwrap();

        let error = allocate_all(&config, &store, &owner("a", "eth0")).unwrap_err();

        assert_eq!(first.ips[0].address, "10.1.2.2/24");
        assert!(
            error.msg.starts_with(
                "failed to allocate for range 0: 10.1.2.2 has been allocated to a, duplicate allocation is not allowed"
            ),
            "{}",
            error.msg
        );
    }

    #[test]
    fn odd_entries_do_not_block_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let config = ipam(dual_stack(), &Invocation::default());
        fs::create_dir(dir.path().join("10.1.2.2")).unwrap();
        fs::write(dir.path().join("10.1.2.3"), vec![b'x'; 5000]).unwrap();

        let result = allocate_all(&config, &store, &owner("a", "eth0")).unwrap();

        assert_eq!(result.ips[0].address, "10.1.2.4/24");
        assert_eq!(
            store.addresses_of(&owner("a", "eth0")).unwrap().len(),
            2,
            "one address per range set"
        );
    }

    #[test]
    fn failure_releases_earlier_sets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let config = ipam(dual_stack(), &Invocation::default());
        fs::write(dir.path().join("2001:db8:1::9"), "a\r\neth0").unwrap();

        let error = allocate_all(&config, &store, &owner("a", "eth0")).unwrap_err();

        assert!(
            error.msg.starts_with(
                "failed to allocate for range 1: 2001:db8:1::9 has been allocated to a"
            )
        );
        assert!(!dir.path().join("10.1.2.2").exists());
    }

    #[test]
    fn requested_ip_goes_to_matching_set() {
        let dir = tempfile::tempdir().unwrap();
        let inv = Invocation {
            args: vec![("IP".into(), "2001:db8:1::99,10.2.2.50".into())],
            ..Default::default()
        };
        let config = ipam(dual_stack(), &inv);

        let result = allocate_all(&config, &Store::new(dir.path()), &owner("a", "eth0")).unwrap();

        assert_eq!(result.ips[0].address, "10.2.2.50/24");
        assert_eq!(result.ips[0].gateway, "10.2.2.1");
        assert_eq!(result.ips[1].address, "2001:db8:1::99/64");
    }

    #[test]
    fn unmatched_request_fails_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let inv = Invocation {
            args: vec![("IP".into(), "10.9.9.9".into())],
            ..Default::default()
        };
        let config = ipam(dual_stack(), &inv);

        let error =
            allocate_all(&config, &Store::new(dir.path()), &owner("a", "eth0")).unwrap_err();

        assert!(
            error
                .msg
                .starts_with("failed to allocate all requested IPs: 10.9.9.9")
        );
        assert!(!dir.path().join("10.1.2.2").exists());
    }

    #[test]
    fn status_needs_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_available(&Store::new(dir.path())).is_ok());

        let absent = dir.path().join("absent");
        let error = check_available(&Store::new(&absent)).unwrap_err();
        assert_eq!(error.code, codes::PLUGIN_NOT_AVAILABLE);
        assert!(error.msg.contains(&absent.display().to_string()));
    }

    #[test]
    fn check_finds_current_and_legacy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        assert!(check_held(&store, &owner("a", "eth0")).is_err());

        fs::write(dir.path().join("10.1.2.2"), "a\r\neth0").unwrap();
        fs::write(dir.path().join("10.1.2.3"), "old").unwrap();

        assert!(check_held(&store, &owner("a", "eth0")).is_ok());
        assert!(check_held(&store, &owner("old", "eth0")).is_ok());
        let error = check_held(&store, &owner("b", "eth0")).unwrap_err();
        assert_eq!(
            error.msg,
            "host-local: Failed to find address added by container b"
        );
    }
}
