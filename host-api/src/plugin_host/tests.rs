//! The `spoof-check` imports through the whole dispatch path (conversion,
//! ownership, policy, kernel) against the recording fake kernel.

use std::sync::{Arc, Mutex};

use super::cniwasm::host::spoof_check::Host;
use super::{CreatedLinks, HostContext, HostContextOptions, HostError, IpamCommand, IpamDelegate};
use crate::audit::{AuditContext, AuditLog};
use crate::kernel::{BridgeSpec, Owner, SpoofCheckSpec, VethSpec};
use crate::policy::PluginPolicy;
use crate::testing::{CallKind, Recorder, RecordingKernel};

const VETH: &str = "veth0a1b2c3d";
const CONTAINER_MAC: &str = "0a:58:0a:f4:0a:02";

struct NoIpam;

impl IpamDelegate for NoIpam {
    fn run_ipam(&self, _command: IpamCommand) -> Result<Option<String>, cniwasm_types::CniError> {
        unreachable!("the spoof-check tests delegate nothing")
    }
}

fn owner() -> Owner {
    Owner {
        network: "mynet".into(),
        container_id: "ctr1".into(),
        ifname: "eth0".into(),
    }
}

/// Returns a host context whose fake kernel has veth `VETH` with container
/// end `eth0` (MAC `CONTAINER_MAC`) and bridge `cni0`, both created by
/// this chain operation, and a foreign veth `veth99999999`.
fn host() -> (HostContext, Recorder) {
    let (mut kernel, recorder) = RecordingKernel::new();
    for (host_name, container_name) in [(VETH, "eth0"), ("veth99999999", "eth1")] {
        let spec = VethSpec {
            host_name: host_name.into(),
            container_name: container_name.into(),
            mtu: None,
            container_mac: Some(CONTAINER_MAC.into()),
        };
        kernel.netlink.create_veth(&spec).unwrap();
    }
    let bridge = BridgeSpec {
        name: "cni0".into(),
        mtu: None,
        promisc: false,
        vlan_filtering: false,
    };
    kernel.netlink.ensure_bridge(&bridge).unwrap();

    let created: CreatedLinks = Arc::new(Mutex::new(vec![VETH.into(), "cni0".into()]));
    let host = HostContext::new(HostContextOptions {
        kernel: Arc::new(Mutex::new(kernel)),
        owner: owner(),
        plugin: "bridge".into(),
        delegate: Arc::new(NoIpam),
        created_links: created,
        policy: Arc::new(PluginPolicy::default()),
        audit: AuditLog::disabled(),
        audit_context: AuditContext::default(),
    });
    (host, recorder)
}

fn add(host: &mut HostContext, link: &str, mac: &str) -> Result<(), HostError> {
    host.add(link.into(), mac.into()).unwrap()
}

#[test]
fn spoof_check_added_for_own_veth() {
    let (mut host, recorder) = host();

    add(&mut host, VETH, "0A:58:0A:F4:0A:02").unwrap();

    let expected = SpoofCheckSpec {
        host_link: VETH.into(),
        mac: CONTAINER_MAC.into(),
    };
    assert_eq!(recorder.spoof_check(&owner()), Some(expected));
}

#[test]
fn spoof_check_ownership_denials() {
    let cases = [
        (
            "veth99999999",
            CONTAINER_MAC,
            "was not created for this attachment",
        ),
        ("cni0", CONTAINER_MAC, "is a bridge and not a veth"),
        (VETH, "0a:58:0a:f4:0a:99", "is not the MAC of eth0"),
    ];
    for (link, mac, needle) in cases {
        let (mut host, recorder) = host();

        let error = add(&mut host, link, mac).unwrap_err();

        assert!(
            matches!(&error, HostError::Denied(message)
                if message.contains(needle) && message.contains("ownership.spoofCheck")),
            "{link} {mac}: {error:?}"
        );
        assert!(recorder.calls_of(CallKind::AddSpoofCheck).is_empty());
        assert_eq!(host.counters().denials, 1);
    }
}

#[test]
fn spoof_check_invalid_mac_rejected() {
    let (mut host, recorder) = host();

    let error = add(&mut host, VETH, "0a:58:0a:f4:0a").unwrap_err();

    assert!(
        matches!(&error, HostError::Invalid(message) if message.contains("\"0a:58:0a:f4:0a\"")),
        "{error:?}"
    );
    assert!(recorder.calls_of(CallKind::AddSpoofCheck).is_empty());
}

#[test]
fn spoof_check_removed_for_owner() {
    let (mut host, recorder) = host();
    add(&mut host, VETH, CONTAINER_MAC).unwrap();

    host.remove().unwrap().unwrap();

    assert_eq!(recorder.spoof_check(&owner()), None);
    let removals = recorder.calls_of(CallKind::RemoveSpoofCheck);
    assert_eq!(removals.len(), 1, "{removals:?}");
}
