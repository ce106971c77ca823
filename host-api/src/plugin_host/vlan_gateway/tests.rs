//! `link.ensure-vlan-gateway` and the ownership rule for `<bridge>.<vlan>`
//! links, through the whole dispatch path against the recording fake kernel.

use std::sync::{Arc, Mutex};

use crate::audit::{AuditContext, AuditLog};
use crate::kernel::{BridgeSpec, KernelErrorKind, LinkInfo, Namespace, Owner};
use crate::plugin_host::cniwasm::host::{address, link, sysctl};
use crate::plugin_host::{
    CreatedLinks, HostContext, HostContextOptions, HostError, IpamCommand, IpamDelegate,
};
use crate::policy::{PluginPolicy, Policy};
use crate::testing::{CallKind, PortVlanEntry, Recorder, RecordingKernel};

struct NoIpam;

impl IpamDelegate for NoIpam {
    fn run_ipam(&self, _command: IpamCommand) -> Result<Option<String>, cniwasm_types::CniError> {
        unreachable!("the VLAN gateway tests delegate nothing")
    }
}

/// A fake kernel with bridge `cni0` and a host context whose chain
/// operation created nothing yet, as for a second container on the
/// bridge.
struct Fixture {
    host: HostContext,
    recorder: Recorder,
    created: CreatedLinks,
}

impl Fixture {
    fn new() -> Self {
        Self::with_policy(PluginPolicy::default())
    }

    /// Builds the fixture with the `bridge` entry of `policy_json`.
    fn with_policy_json(policy_json: &str) -> Self {
        let policy = Policy::from_json(policy_json).expect("a valid policy");
        Self::with_policy(policy.for_plugin("bridge").clone())
    }

    fn with_policy(policy: PluginPolicy) -> Self {
        Self::build(policy, AuditLog::disabled())
    }

    fn build(policy: PluginPolicy, audit: AuditLog) -> Self {
        let (mut kernel, recorder) = RecordingKernel::new();
        let bridge = BridgeSpec {
            name: "cni0".into(),
            mtu: None,
            promisc: false,
            vlan_filtering: true,
        };
        kernel.netlink.ensure_bridge(&bridge).unwrap();

        let created = CreatedLinks::default();
        let host = HostContext::new(HostContextOptions {
            kernel: Arc::new(Mutex::new(kernel)),
            owner: Owner {
                network: "mynet".into(),
                container_id: "ctr1".into(),
                ifname: "eth0".into(),
            },
            plugin: "bridge".into(),
            delegate: Arc::new(NoIpam),
            created_links: created.clone(),
            policy: Arc::new(policy),
            audit,
            audit_context: AuditContext::default(),
        });
        Self {
            host,
            recorder,
            created,
        }
    }

    fn ensure(&mut self, bridge: &str, vlan: u16) -> Result<link::LinkInfo, HostError> {
        let spec = link::VlanGatewaySpec {
            bridge: bridge.into(),
            vlan,
            mtu: Some(1400),
            remove_default: true,
        };
        link::Host::ensure_vlan_gateway(&mut self.host, spec).unwrap()
    }

    fn add_address(&mut self, link: &str) -> Result<(), HostError> {
        address::Host::add(
            &mut self.host,
            crate::plugin_host::Netns::Host,
            link.into(),
            "10.244.41.1/24".into(),
        )
        .unwrap()
    }

    fn created(&self) -> Vec<String> {
        self.created.lock().unwrap().clone()
    }

    /// Adds a host link of `kind` that no chain operation created.
    fn seed_link(&self, name: &str, kind: &str) {
        let link = LinkInfo {
            name: name.into(),
            index: 90,
            kind: kind.into(),
            mac: "0a:58:00:00:00:5a".into(),
            mtu: 1500,
            up: true,
            oper_state: "up".into(),
            master: None,
            promisc: false,
            allmulti: false,
            tx_queue_len: 1000,
        };
        self.recorder.add_link(Namespace::Host, link);
    }

    fn host_link_names(&self) -> Vec<String> {
        let links = self.recorder.links(Namespace::Host);
        links.into_iter().map(|link| link.name).collect()
    }
}

fn assert_denied(error: &HostError, needle: &str) {
    assert!(
        matches!(error, HostError::Denied(message) if message.contains(needle)),
        "expected a denial containing {needle:?}: {error:?}"
    );
}

#[test]
fn vlan_gateway_created_on_bridge() {
    let mut fixture = Fixture::new();

    let gateway = fixture.ensure("cni0", 100).unwrap();

    assert_eq!(gateway.name, "cni0.100");
    assert_eq!(gateway.kind, "veth");
    assert!(gateway.up);
    assert_eq!(gateway.mtu, 1400);
    let links = fixture.recorder.links(Namespace::Host);
    let peer = links
        .iter()
        .find(|link| link.name.starts_with("veth"))
        .expect("the peer exists");
    assert_eq!(peer.name.len(), "veth".len() + 8, "{}", peer.name);
    assert_eq!(peer.master.as_deref(), Some("cni0"));
    assert!(peer.up);
    let expected = PortVlanEntry {
        vid: 100,
        pvid: true,
        untagged: true,
    };
    assert_eq!(fixture.recorder.port_vlans(&peer.name), [expected]);
    assert_eq!(fixture.created(), ["cni0.100"]);
}

#[test]
fn vlan_gateway_preserves_default_vlan() {
    let mut fixture = Fixture::new();
    let spec = link::VlanGatewaySpec {
        bridge: "cni0".into(),
        vlan: 100,
        mtu: None,
        remove_default: false,
    };

    link::Host::ensure_vlan_gateway(&mut fixture.host, spec)
        .unwrap()
        .unwrap();

    let links = fixture.recorder.links(Namespace::Host);
    let peer = links.iter().find(|link| link.name.starts_with("veth"));
    let vids: Vec<u16> = fixture
        .recorder
        .port_vlans(&peer.unwrap().name)
        .iter()
        .map(|entry| entry.vid)
        .collect();
    assert_eq!(vids, [1, 100]);
}

#[test]
fn vlan_gateway_reused() {
    let mut fixture = Fixture::new();
    let first = fixture.ensure("cni0", 100).unwrap();

    let second = fixture.ensure("cni0", 100).unwrap();

    assert_eq!(second.index, first.index);
    assert_eq!(fixture.recorder.calls_of(CallKind::CreateHostVeth).len(), 1);
    assert_eq!(fixture.created(), ["cni0.100"], "recorded once");
    assert_eq!(fixture.host_link_names().len(), 3, "cni0 and one pair");
}

#[test]
fn vlan_gateway_invalid_specs() {
    let cases = [
        ("cni0", 0, "invalid VLAN ID 0"),
        ("cni0", 4095, "invalid VLAN ID 4095"),
        ("bridge-01234", 100, "\"bridge-01234.100\" is 16 bytes"),
        ("bridge/0", 100, "invalid interface name"),
    ];
    for (bridge, vlan, needle) in cases {
        let mut fixture = Fixture::new();

        let error = fixture.ensure(bridge, vlan).unwrap_err();

        assert!(
            matches!(&error, HostError::Invalid(message) if message.contains(needle)),
            "{bridge} {vlan}: {error:?}"
        );
        let calls = fixture.recorder.calls();
        assert_eq!(calls.len(), 1, "only the fixture's bridge: {calls:?}");
    }
}

#[test]
fn vlan_gateway_15_byte_name_accepted() {
    let mut fixture = Fixture::new();
    fixture.seed_link("bridge-0123", "bridge");

    let gateway = fixture.ensure("bridge-0123", 100).unwrap();

    assert_eq!(gateway.name, "bridge-0123.100");
}

#[test]
fn vlan_gateway_name_too_long_names_fix() {
    let mut fixture = Fixture::new();

    let error = fixture.ensure("bridge-01234", 100).unwrap_err();

    assert!(
        matches!(&error, HostError::Invalid(message)
            if message.contains("at most 11 bytes for VLAN 100")),
        "{error:?}"
    );
}

#[test]
fn vlan_gateway_over_non_veth_denied() {
    for kind in ["dummy", "bridge", "vlan"] {
        let mut fixture = Fixture::new();
        fixture.seed_link("cni0.100", kind);

        let error = fixture.ensure("cni0", 100).unwrap_err();

        assert_denied(&error, "not the veth of a VLAN gateway");
        assert_denied(&error, "ownership.hostLinks");
        assert!(
            fixture
                .recorder
                .calls_of(CallKind::CreateHostVeth)
                .is_empty()
        );
        assert!(fixture.created().is_empty(), "{kind}");
    }
}

#[test]
fn vlan_gateway_on_non_bridge_denied() {
    let mut fixture = Fixture::new();
    fixture.seed_link("eth0", "dummy");

    let error = fixture.ensure("eth0", 100).unwrap_err();

    assert_denied(&error, "is not a bridge");
    assert!(
        fixture
            .recorder
            .calls_of(CallKind::CreateHostVeth)
            .is_empty()
    );
}

#[test]
fn vlan_gateway_missing_bridge_not_found() {
    let mut fixture = Fixture::new();

    let error = fixture.ensure("cni9", 100).unwrap_err();

    assert!(
        matches!(&error, HostError::NotFound(message) if message.contains("\"cni9\"")),
        "{error:?}"
    );
    assert!(
        fixture
            .recorder
            .calls_of(CallKind::CreateHostVeth)
            .is_empty()
    );
}

#[test]
fn vlan_gateway_policy_checks_bridge_and_name() {
    let policy = r#"{"plugins": {"bridge": {"links": {
        "bridges": ["cni0"], "hostNames": ["veth*", "cni0", "cni0.*"], "mtu": {"min": 1280, "max": 9000}}}}}"#;
    let mut fixture = Fixture::with_policy_json(policy);
    fixture.seed_link("other0", "bridge");

    let other = fixture.ensure("other0", 100).unwrap_err();
    assert_denied(&other, "links.bridges");
    fixture.ensure("cni0", 100).unwrap();

    let narrow =
        r#"{"plugins": {"bridge": {"links": {"bridges": ["cni0"], "hostNames": ["veth*"]}}}}"#;
    let mut fixture = Fixture::with_policy_json(narrow);
    let name = fixture.ensure("cni0", 100).unwrap_err();
    assert_denied(&name, "links.hostNames");
    assert_eq!(fixture.host_link_names(), ["cni0"]);
}

#[test]
fn vlan_gateway_failure_leaves_nothing() {
    for (call, nth) in [
        (CallKind::ConfigureLink, 1),
        (CallKind::SetPortVlans, 1),
        (CallKind::ConfigureLink, 2),
    ] {
        let mut fixture = Fixture::new();
        fixture
            .recorder
            .fail_call(call, nth, KernelErrorKind::Failed);

        let error = fixture.ensure("cni0", 100).unwrap_err();

        assert!(matches!(error, HostError::Failed(_)), "{call:?}: {error:?}");
        assert_eq!(fixture.host_link_names(), ["cni0"], "{call:?}");
        assert!(fixture.created().is_empty(), "{call:?}");
    }
}

/// A later attachment on the VLAN did not create `cni0.100`, but may put
/// its gateway address on it and set its sysctls, as on the bridge.
#[test]
fn host_link_allows_vlan_gateway() {
    let mut later = Fixture::new();
    later.seed_link("cni0.100", "veth");

    later.add_address("cni0.100").unwrap();
    let key = "net/ipv6/conf/cni0.100/accept_ra".to_string();
    sysctl::Host::set(
        &mut later.host,
        crate::plugin_host::Netns::Host,
        key,
        "0".into(),
    )
    .unwrap()
    .unwrap();

    let addresses = later.recorder.addresses(Namespace::Host, "cni0.100");
    assert_eq!(addresses, ["10.244.41.1/24".parse().unwrap()]);
}

#[test]
fn host_link_denies_other_dotted_links() {
    let cases = [
        // Not a veth.
        ("cni0.100", "dummy", None),
        // No bridge of that name.
        ("eth0.100", "veth", Some("eth0")),
        ("cni9.100", "veth", None),
        // Not a VLAN ID as the kernel and the host write it.
        ("cni0.0100", "veth", None),
        ("cni0.0", "veth", None),
        ("cni0.4095", "veth", None),
        ("cni0.+100", "veth", None),
        ("cni0.", "veth", None),
    ];
    for (name, kind, other_link) in cases {
        let mut fixture = Fixture::new();
        fixture.seed_link(name, kind);
        if let Some(other) = other_link {
            fixture.seed_link(other, "dummy");
        }

        let error = fixture.add_address(name).unwrap_err();

        assert_denied(&error, "is not an allowed bridge");
    }
}

#[test]
fn host_link_denies_gateway_of_denied_bridge() {
    let policy = r#"{"plugins": {"bridge": {"links": {"bridges": ["mynet"]}}}}"#;
    let mut fixture = Fixture::with_policy_json(policy);
    fixture.seed_link("cni0.100", "veth");

    let error = fixture.add_address("cni0.100").unwrap_err();

    assert_denied(&error, "ownership.hostLinks");
}

#[test]
fn vlan_gateway_calls_audited() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let audit = AuditLog::open(&path).unwrap();
    let mut fixture = Fixture::build(PluginPolicy::default(), audit);
    fixture.seed_link("cni0.200", "dummy");

    fixture.ensure("cni0", 100).unwrap();
    fixture.ensure("cni0", 200).unwrap_err();

    let text = std::fs::read_to_string(&path).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{text}");
    for record in &records {
        assert_eq!(record["operation"], "link.ensure-vlan-gateway");
        assert_eq!(record["arguments"]["bridge"], "cni0");
    }
    assert_eq!(records[0]["arguments"]["vlan"], 100);
    assert_eq!(records[0]["decision"], "allow");
    assert_eq!(records[0]["outcome"], "ok");
    assert_eq!(records[1]["decision"], "deny");
    assert_eq!(records[1]["rule"], "ownership.hostLinks");
}

/// When the kernel reports the pair as existing although the lookup found
/// none, and the name is still absent afterwards, the error stays and
/// nothing is recorded as created.
#[test]
fn vlan_gateway_exists_error_without_link() {
    let mut fixture = Fixture::new();
    fixture
        .recorder
        .fail_call(CallKind::CreateHostVeth, 1, KernelErrorKind::Exists);

    let error = fixture.ensure("cni0", 100).unwrap_err();

    assert!(matches!(error, HostError::AlreadyExists(_)), "{error:?}");
    assert!(fixture.created().is_empty());
    assert_eq!(fixture.host_link_names(), ["cni0"]);
}
