//! Bridge VLANs on the real kernel (cni-spec.md 6.1 and 7.2): `vlan` side by
//! side with the reference bridge plugin (Debian's 1.1.1, which has `vlan`
//! but neither `vlanTrunk` nor `preserveDefaultVlan`), and a trunk through
//! cniwasm alone.
//!
//! A kernel built without CONFIG_BRIDGE_VLAN_FILTERING rejects a filtering
//! bridge with EOPNOTSUPP. On such a kernel each test checks that both
//! implementations fail the same way and leave nothing behind. Then
//! `vlan_cases_on_a_filtering_kernel` runs every test of this file again in
//! a VM with Debian's kernel, which filters VLANs, so they take the VLAN path.

use cniwasm_integration_tests::reference::ReferenceRun;
use cniwasm_integration_tests::vm;
use cniwasm_integration_tests::{
    CliOutput, Netns, Scenario, container_id, ip_only_path, normalize_result, require_root,
    unique_name,
};
use serde_json::{Value, json};

const NETWORK: &str = "vlannet";
const BRIDGE: &str = "vlbr0";

/// Returns a bridge + host-local list on 10.244.41.0/24, with `options` added to
/// the bridge plugin.
fn vlan_list(options: Value) -> Value {
    let mut plugin = json!({"type": "bridge", "bridge": BRIDGE,
        "ipam": {"type": "host-local", "subnet": "10.244.41.0/24"}});
    for (key, value) in options.as_object().expect("options are an object") {
        plugin[key] = value.clone();
    }
    json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [plugin]})
}

/// Returns a scenario whose network is `vlan_list(options)` at spec
/// `version`.
fn vlan_scenario(options: &Value, version: &str) -> Scenario {
    let scenario = Scenario::new();
    let mut list = vlan_list(options.clone());
    list["cniVersion"] = json!(version);
    scenario.write_config("10-vlan.conflist", &list.to_string());
    scenario
}

/// Tells whether the kernel lets `host` have a filtering bridge, by
/// creating one and removing it.
fn vlan_filtering_supported(host: &Netns) -> bool {
    let probe = unique_name("vp");
    let args = [
        "link",
        "add",
        probe.as_str(),
        "type",
        "bridge",
        "vlan_filtering",
        "1",
    ];
    let supported = host
        .exec(&[&["ip"][..], &args[..]].concat())
        .status
        .success();
    if supported {
        host.exec_ok(&["ip", "link", "del", &probe]);
    } else if vm::in_vm() {
        panic!("the VM's kernel refused a filtering bridge; it must filter VLANs");
    } else {
        eprintln!(
            "NOTE: this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING): comparing the failures instead of the VLAN state"
        );
    }
    supported
}

/// Runs this file's tests in a VM whose kernel filters VLANs when this
/// kernel does not, so that the VLAN cases run on a real kernel either way.
#[test]
fn vlan_cases_on_a_filtering_kernel() {
    const NAME: &str = "vlan_cases_on_a_filtering_kernel";
    if !require_root() || vm::in_vm() {
        return;
    }
    let host = Netns::create("cwk");
    if vlan_filtering_supported(&host) {
        eprintln!("NOTE: this kernel filters VLANs, so the other tests ran the VLAN cases here");
        return;
    }

    let output = vm::rerun_in_vm(&["--skip", NAME]);

    let passed = vm::passed_count(&output.stdout);
    assert!(
        output.status.success() && passed == Some(VLAN_TESTS),
        "the VLAN tests failed in the VM ({}; expected {VLAN_TESTS} passed)\nstdout:\n{}\nstderr:\n{}",
        output.status,
        output.stdout,
        output.stderr
    );
}

/// The tests in this file other than `vlan_cases_on_a_filtering_kernel`.
const VLAN_TESTS: usize = 12;

fn cniwasm(scenario: &Scenario, command: &str, container: &Netns) -> CliOutput {
    let path = container.path();
    scenario.cniwasm(&[command, NETWORK, path.to_str().unwrap()], &[])
}

/// Returns the host port's VLANs as (vid, flags), from `bridge -j vlan show`.
fn port_vlans(host: &Netns, port: &str) -> Vec<(u64, Vec<String>)> {
    let text = host.exec_ok(&["bridge", "-j", "vlan", "show", "dev", port]);
    let listing: Value = serde_json::from_str(&text).expect("bridge -j prints JSON");
    listing[0]["vlans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|vlan| {
            let flags = vlan["flags"].as_array().into_iter().flatten();
            let flags = flags.filter_map(|f| f.as_str().map(str::to_string));
            (vlan["vlan"].as_u64().unwrap_or(0), flags.collect())
        })
        .collect()
}

fn vlan_filtering(host: &Netns) -> Value {
    let link = host.ip_json(&["-d", "link", "show", BRIDGE]);
    link[0]["linkinfo"]["info_data"]["vlan_filtering"].clone()
}

/// Asserts that a failed ADD left only `lo` in both namespaces.
fn assert_nothing_left(scenario: &Scenario, container: &Netns, implementation: &str) {
    let host_links = scenario.host.link_names();
    assert_eq!(host_links, ["lo"], "{implementation}: host links");
    let container_links = container.link_names();
    assert_eq!(container_links, ["lo"], "{implementation}: container links");
}

/// Asserts that both ADDs failed because the kernel has no VLAN filtering,
/// with code 999 from cniwasm, and left nothing behind. `theirs` is `None`
/// for a spec version the reference does not support.
fn assert_same_unsupported_failure(
    ours: &CliOutput,
    theirs: Option<Result<Value, String>>,
    scenario: &Scenario,
    container: &Netns,
    reference: &Reference,
) {
    assert!(!ours.status.success(), "ADD succeeded: {}", ours.stdout);
    let error = ours.json();
    assert_eq!(error["code"], json!(999), "{error}");
    let message = error["msg"].as_str().unwrap().to_lowercase();
    assert!(message.contains("operation not supported"), "{message}");
    assert!(scenario.reservations(NETWORK).is_empty());
    assert_nothing_left(scenario, container, "cniwasm");

    if let Some(theirs) = theirs {
        let theirs = theirs.expect_err("the reference ADD succeeded");
        let lower = theirs.to_lowercase();
        assert!(lower.contains("operation not supported"), "{theirs}");
        assert_nothing_left(&reference.scenario, &reference.container, "reference");
    }
}

/// The reference's run of `list` for a container of its own.
struct Reference {
    scenario: Scenario,
    container: Netns,
    list: Value,
    id: String,
    /// The container namespace's path.
    netns: String,
}

impl Reference {
    fn new(options: &Value, ours: &Netns) -> Self {
        let scenario = Scenario::new();
        let mut list = vlan_list(options.clone());
        list["plugins"][0]["ipam"]["dataDir"] = json!(scenario.ipam_dir());
        let container = Netns::create("cwr");
        Self {
            id: container_id(ours.path().to_str().unwrap()),
            netns: container.path().display().to_string(),
            container,
            scenario,
            list,
        }
    }

    fn run(&self) -> ReferenceRun<'_> {
        let host = &self.scenario.host;
        ReferenceRun::plain(host, &self.list, &self.id, &self.netns)
    }
}

/// Spec versions the reference bridge plugin (1.1.1) supports; cniwasm also
/// runs 1.1.0.
const REFERENCE_VERSIONS: [&str; 6] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"];
const VERSIONS: [&str; 7] = [
    "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0",
];

/// Returns the names of the bridge's ports in `host`.
fn bridge_ports(host: &Netns) -> Vec<String> {
    let ports = host.ip_json(&["link", "show", "master", BRIDGE]);
    let ports = ports.as_array().cloned().unwrap_or_default();
    ports
        .iter()
        .filter_map(|port| port["ifname"].as_str().map(str::to_string))
        .collect()
}

/// Returns the VLANs of the bridge's one port, which the assertion checks.
fn only_port_vlans(host: &Netns, implementation: &str) -> Vec<(u64, Vec<String>)> {
    let ports = bridge_ports(host);
    assert_eq!(ports.len(), 1, "{implementation}: bridge ports {ports:?}");
    port_vlans(host, &ports[0])
}

fn vlan(id: u64, flags: &[&str]) -> (u64, Vec<String>) {
    (id, flags.iter().map(|flag| flag.to_string()).collect())
}

/// `vlan: 100` at every spec version: the result and the bridge's
/// vlan_filtering agree with the reference, the port's only VLAN is 100 as
/// PVID and untagged, and DEL removes the veth but keeps the bridge.
#[test]
fn vlan_100_every_version() {
    if !require_root() {
        return;
    }
    for version in VERSIONS {
        vlan_100_at(version);
    }
}

/// One ADD of the same options at one spec version through cniwasm and,
/// where the reference supports the version, through the reference.
struct SideBySide {
    scenario: Scenario,
    container: Netns,
    reference: Reference,
    ours: CliOutput,
    theirs: Option<Result<Value, String>>,
}

impl SideBySide {
    fn add(options: &Value, version: &str) -> Self {
        let scenario = vlan_scenario(options, version);
        let container = Netns::create("cwc");
        let mut reference = Reference::new(options, &container);
        reference.list["cniVersion"] = json!(version);

        let ours = cniwasm(&scenario, "add", &container);
        let compared = REFERENCE_VERSIONS.contains(&version);
        let theirs = compared.then(|| reference.run().add());
        Self {
            scenario,
            container,
            reference,
            ours,
            theirs,
        }
    }

    /// Tells whether the kernel filters VLANs; when it does not, first
    /// asserts that both ADDs failed alike and left nothing behind.
    fn vlans_supported(self) -> Option<Self> {
        if vlan_filtering_supported(&self.scenario.host) {
            return Some(self);
        }
        let (scenario, container) = (&self.scenario, &self.container);
        assert_same_unsupported_failure(
            &self.ours,
            self.theirs,
            scenario,
            container,
            &self.reference,
        );
        None
    }
}

fn vlan_100_at(version: &str) {
    let run = SideBySide::add(&json!({"vlan": 100}), version);
    let Some(SideBySide {
        scenario,
        container,
        reference,
        ours,
        theirs,
    }) = run.vlans_supported()
    else {
        return;
    };

    let ours = ours.assert_success().json();
    assert_eq!(ours["cniVersion"], json!(version));
    assert_eq!(vlan_filtering(&scenario.host), json!(1), "{version}");
    let expected = vec![vlan(100, &["PVID", "Egress Untagged"])];
    assert_eq!(
        only_port_vlans(&scenario.host, "cniwasm"),
        expected,
        "{version}"
    );
    if let Some(theirs) = theirs {
        let theirs = theirs.expect("the reference ADD");
        assert_eq!(
            normalize_result(&ours),
            normalize_result(&theirs),
            "{version}"
        );
        assert_eq!(vlan_filtering(&reference.scenario.host), json!(1));
        // The reference 1.1.1 predates `preserveDefaultVlan` and keeps VLAN 1,
        // as newer releases do only when it is true.
        let host = &reference.scenario.host;
        let kept = vec![vlan(1, &["Egress Untagged"]), expected[0].clone()];
        assert_eq!(only_port_vlans(host, "reference"), kept, "{version}");
    }

    cniwasm(&scenario, "del", &container).assert_success();
    assert_eq!(scenario.host.link_names(), ["lo", BRIDGE], "{version}");
    assert!(scenario.reservations(NETWORK).is_empty(), "{version}");
}

/// Out-of-range `vlan` values fail with the reference's code and message,
/// before anything is created.
#[test]
fn vlan_out_of_range() {
    if !require_root() {
        return;
    }
    for vlan in [4095, -1] {
        let SideBySide {
            scenario,
            container,
            ours,
            theirs,
            ..
        } = SideBySide::add(&json!({"vlan": vlan}), "1.0.0");

        let theirs = theirs
            .expect("the reference runs 1.0.0")
            .expect_err("the reference ADD succeeded");

        assert!(!ours.status.success(), "{vlan}: ADD succeeded");
        let error = ours.json();
        assert_eq!(error["code"], json!(999), "{error}");
        let message = format!("invalid VLAN ID {vlan} (must be between 0 and 4094)");
        // The runtime puts the plugin's name before the message.
        let ours = error["msg"].as_str().unwrap();
        assert!(ours.ends_with(&format!("(add): {message}")), "{ours}");
        assert!(theirs.contains(&message), "{theirs}");
        assert!(theirs.contains("\"code\": 999"), "{theirs}");
        assert_nothing_left(&scenario, &container, "cniwasm");
    }
}

/// A trunk of 101 and 200-210 with native VLAN 1, through cniwasm alone
/// (the reference in /usr/lib/cni ignores `vlanTrunk`). DEL removes the
/// port and frees the address.
#[test]
fn vlan_trunk() {
    if !require_root() {
        return;
    }
    let options = json!({"vlanTrunk": [{"id": 101}, {"minID": 200, "maxID": 210}]});
    let scenario = vlan_scenario(&options, "1.0.0");
    let container = Netns::create("cwc");

    let output = cniwasm(&scenario, "add", &container);

    if !vlan_filtering_supported(&scenario.host) {
        assert!(!output.status.success(), "ADD succeeded: {}", output.stdout);
        let error = output.json();
        assert_eq!(error["code"], json!(999), "{error}");
        assert!(scenario.reservations(NETWORK).is_empty());
        assert_nothing_left(&scenario, &container, "cniwasm");
        return;
    }
    let result = output.assert_success().json();
    let port = result["interfaces"][1]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let vids: Vec<u64> = port_vlans(&scenario.host, &port)
        .iter()
        .map(|v| v.0)
        .collect();
    let mut expected = vec![1, 101];
    expected.extend(200..=210);
    assert_eq!(vids, expected);
    assert_eq!(vlan_filtering(&scenario.host), json!(1));

    cniwasm(&scenario, "del", &container).assert_success();
    assert!(!scenario.host.link_names().contains(&port));
    assert!(scenario.reservations(NETWORK).is_empty());
}

/// Runs ADD of `options` through cniwasm alone, returns the VLANs of the
/// bridge's one port and runs DEL. On a kernel without VLAN filtering the
/// ADD must fail and leave nothing behind, and the result is `None`.
fn port_vlans_after_add(options: Value) -> Option<Vec<(u64, Vec<String>)>> {
    let scenario = vlan_scenario(&options, "1.0.0");
    let container = Netns::create("cwc");

    let output = cniwasm(&scenario, "add", &container);

    if !vlan_filtering_supported(&scenario.host) {
        assert!(!output.status.success(), "ADD succeeded: {}", output.stdout);
        assert_eq!(output.json()["code"], json!(999), "{}", output.stdout);
        assert!(scenario.reservations(NETWORK).is_empty());
        assert_nothing_left(&scenario, &container, "cniwasm");
        return None;
    }
    output.assert_success();
    let vlans = only_port_vlans(&scenario.host, "cniwasm");

    cniwasm(&scenario, "del", &container).assert_success();
    assert_eq!(scenario.host.link_names(), ["lo", BRIDGE]);
    Some(vlans)
}

/// `vlan` with `vlanTrunk`: the access VLAN is the PVID and untagged, the
/// trunk's VLANs are tagged, and VLAN 1 is gone.
#[test]
fn vlan_with_trunk() {
    if !require_root() {
        return;
    }
    let options = json!({"vlan": 100, "vlanTrunk": [{"id": 101}, {"minID": 200, "maxID": 202}]});

    let Some(vlans) = port_vlans_after_add(options) else {
        return;
    };

    let expected = vec![
        vlan(100, &["PVID", "Egress Untagged"]),
        vlan(101, &[]),
        vlan(200, &[]),
        vlan(201, &[]),
        vlan(202, &[]),
    ];
    assert_eq!(vlans, expected);
}

/// `preserveDefaultVlan: true` keeps the kernel's VLAN 1 on the port, which
/// stays untagged but is no longer the PVID; without it only VLAN 100 is left.
#[test]
fn preserve_default_vlan() {
    if !require_root() {
        return;
    }
    let kept = port_vlans_after_add(json!({"vlan": 100, "preserveDefaultVlan": true}));
    let removed = port_vlans_after_add(json!({"vlan": 100, "preserveDefaultVlan": false}));
    let (Some(kept), Some(removed)) = (kept, removed) else {
        return;
    };

    let access = vlan(100, &["PVID", "Egress Untagged"]);
    assert_eq!(kept, vec![vlan(1, &["Egress Untagged"]), access.clone()]);
    assert_eq!(removed, vec![access]);
}

/// Invalid trunks fail before anything is created, with the reference's
/// messages (cni-spec.md 6.1) and code 999.
#[test]
fn trunk_errors_leave_nothing() {
    if !require_root() {
        return;
    }
    let cases = [
        (json!([{"id": 0}]), "incorrect trunk id parameter"),
        (json!([{"id": 4095}]), "incorrect trunk id parameter"),
        (
            json!([{"minID": 0, "maxID": 5}]),
            "incorrect trunk minID parameter",
        ),
        (
            json!([{"minID": 5, "maxID": 4095}]),
            "incorrect trunk maxID parameter",
        ),
        (
            json!([{"minID": 9, "maxID": 5}]),
            "minID is greater than maxID in trunk parameter",
        ),
        (
            json!([{"minID": 5}]),
            "minID and maxID should be configured simultaneously",
        ),
        (
            json!([{"maxID": 5}]),
            "minID and maxID should be configured simultaneously",
        ),
    ];
    for (trunk, message) in cases {
        let scenario = vlan_scenario(&json!({"vlanTrunk": trunk}), "1.0.0");
        let container = Netns::create("cwc");

        let output = cniwasm(&scenario, "add", &container);

        assert!(!output.status.success(), "{trunk}: ADD succeeded");
        let error = output.json();
        assert_eq!(error["code"], json!(999), "{trunk}: {error}");
        let text = error["msg"].as_str().unwrap();
        assert!(text.contains(message), "{trunk}: {text}");
        assert!(scenario.reservations(NETWORK).is_empty(), "{trunk}");
        assert_nothing_left(&scenario, &container, "cniwasm");
    }
}

/// Adds a network `name` on the shared bridge with VLAN `vlan` and
/// addresses `first` to `last` of 10.244.41.0/24.
fn write_vlan_network(scenario: &Scenario, name: &str, vlan: u64, first: &str, last: &str) {
    let ipam = json!({"type": "host-local", "subnet": "10.244.41.0/24",
        "rangeStart": first, "rangeEnd": last, "dataDir": scenario.ipam_dir()});
    let plugin = json!({"type": "bridge", "bridge": BRIDGE, "vlan": vlan, "ipam": ipam});
    let list = json!({"cniVersion": "1.0.0", "name": name, "plugins": [plugin]});
    scenario.write_config(&format!("10-{name}.conflist"), &list.to_string());
}

fn add_to(scenario: &Scenario, network: &str, container: &Netns) -> CliOutput {
    let path = container.path();
    scenario.cniwasm(&["add", network, path.to_str().unwrap()], &[])
}

/// Real frames: two containers on VLAN 100 reach each other, and a
/// container in the same subnet on VLAN 200 reaches neither, because the
/// bridge forwards a frame only between ports of its VLAN.
#[test]
fn vlans_isolate_traffic() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    write_vlan_network(&scenario, "vlan100", 100, "10.244.41.10", "10.244.41.19");
    write_vlan_network(&scenario, "vlan200", 200, "10.244.41.20", "10.244.41.29");
    let first = Netns::create("cwa");
    let second = Netns::create("cwb");
    let other = Netns::create("cwo");

    let added = add_to(&scenario, "vlan100", &first);
    if !vlan_filtering_supported(&scenario.host) {
        assert!(!added.status.success(), "ADD succeeded: {}", added.stdout);
        return;
    }
    added.assert_success();
    add_to(&scenario, "vlan100", &second).assert_success();
    add_to(&scenario, "vlan200", &other).assert_success();

    assert!(ping(&first, "10.244.41.11"), "VLAN 100 to VLAN 100");
    assert!(ping(&second, "10.244.41.10"), "VLAN 100 to VLAN 100");
    assert!(!ping(&other, "10.244.41.10"), "VLAN 200 reached VLAN 100");
    assert!(!ping(&first, "10.244.41.20"), "VLAN 100 reached VLAN 200");
}

/// The link that carries the gateway address of VLAN 100 on `BRIDGE`.
const GATEWAY_LINK: &str = "vlbr0.100";
const GATEWAY: &str = "10.244.41.1";

/// Returns the other end of the veth `name` in `host`.
fn veth_peer(host: &Netns, name: &str) -> String {
    let link = host.ip_json(&["link", "show", "dev", name]);
    let peer = link[0]["link"].as_str();
    peer.unwrap_or_else(|| panic!("{name} has no peer in {link}"))
        .to_string()
}

fn master(host: &Netns, name: &str) -> Value {
    host.ip_json(&["link", "show", "dev", name])[0]["master"].clone()
}

fn mac(host: &Netns, name: &str) -> Value {
    host.ip_json(&["link", "show", "dev", name])[0]["address"].clone()
}

fn sorted_link_names(host: &Netns) -> Vec<String> {
    let mut names = host.link_names();
    names.sort();
    names
}

/// Pings `to` from `from`, up to three times, since the first echo can
/// be lost while ARP resolves the address on the slow VM.
fn ping(from: &Netns, to: &str) -> bool {
    (0..3).any(|_| {
        let output = from.exec(&["busybox", "ping", "-c", "1", "-W", "2", to]);
        output.status.success()
    })
}

/// `vlan: 100` with `isGateway`: as in the reference, the gateway address
/// goes on the veth `vlbr0.100`, whose peer is a bridge port with PVID 100,
/// and the result lists that link as a 4th interface. The container reaches
/// the gateway, CHECK passes, a second container on the VLAN reuses the
/// pair, and DEL removes only the container's veth.
#[test]
fn vlan_gateway() {
    if !require_root() {
        return;
    }
    let run = SideBySide::add(&json!({"vlan": 100, "isGateway": true}), "1.0.0");
    let Some(SideBySide {
        scenario,
        container,
        reference,
        ours,
        theirs,
    }) = run.vlans_supported()
    else {
        return;
    };

    let ours = ours.assert_success().json();
    let theirs = theirs.expect("the reference runs 1.0.0");
    let theirs = theirs.expect("the reference ADD");
    assert_eq!(normalize_result(&ours), normalize_result(&theirs));
    let interfaces = ours["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 4, "{ours}");
    assert_eq!(interfaces[3]["name"], GATEWAY_LINK);
    assert!(interfaces[3].get("sandbox").is_none(), "{ours}");
    assert_eq!(ours["ips"][0]["interface"], json!(2));
    assert_eq!(ours["ips"][0]["gateway"], GATEWAY);

    let runs = [
        ("cniwasm", &scenario.host, &container, &ours),
        (
            "reference",
            &reference.scenario.host,
            &reference.container,
            &theirs,
        ),
    ];
    for (name, host, container, result) in runs {
        let gateway_cidr = format!("{GATEWAY}/24");
        assert_eq!(
            host.global_addresses(GATEWAY_LINK),
            [gateway_cidr],
            "{name}"
        );
        assert!(host.global_addresses(BRIDGE).is_empty(), "{name}");
        assert_eq!(
            mac(host, GATEWAY_LINK),
            result["interfaces"][3]["mac"],
            "{name}"
        );
        let peer = veth_peer(host, GATEWAY_LINK);
        assert_eq!(master(host, &peer), json!(BRIDGE), "{name}");
        let pvid = port_vlans(host, &peer)
            .into_iter()
            .find(|(_, flags)| flags.iter().any(|f| f == "PVID"));
        let expected = (100, vec!["PVID".to_string(), "Egress Untagged".to_string()]);
        assert_eq!(pvid, Some(expected), "{name}");

        let host_veth = result["interfaces"][1]["name"].as_str().unwrap();
        let mut expected = ["lo", BRIDGE, host_veth, GATEWAY_LINK, &peer].map(String::from);
        expected.sort();
        assert_eq!(sorted_link_names(host), expected, "{name}");
        // Neither pins the bridge's MAC here, so the kernel gives it the
        // lowest MAC of its ports.
        let port_macs = [mac(host, host_veth), mac(host, &peer)];
        assert!(
            port_macs.contains(&mac(host, BRIDGE)),
            "{name}: {port_macs:?}"
        );
        let forwarding = host.exec_ok(&["sysctl", "-n", "net.ipv4.ip_forward"]);
        assert_eq!(forwarding.trim(), "1", "{name}");
        assert!(ping(container, GATEWAY), "{name}: gateway unreachable");
    }
    // Unlike the reference 1.1.1, cniwasm removes VLAN 1 from the gateway
    // port, as from container ports, unless preserveDefaultVlan is set.
    let peer = veth_peer(&scenario.host, GATEWAY_LINK);
    let vids: Vec<u64> = port_vlans(&scenario.host, &peer)
        .iter()
        .map(|v| v.0)
        .collect();
    assert_eq!(vids, [100]);

    cniwasm(&scenario, "check", &container).assert_success();
    reference.run().check(&theirs).expect("the reference CHECK");

    let second = Netns::create("cwc");
    let links_before = sorted_link_names(&scenario.host);
    let second_result = cniwasm(&scenario, "add", &second).assert_success().json();
    assert_eq!(second_result["interfaces"][3], ours["interfaces"][3]);
    assert_eq!(
        veth_peer(&scenario.host, GATEWAY_LINK),
        peer,
        "the pair is reused"
    );
    let second_veth = second_result["interfaces"][1]["name"].as_str().unwrap();
    let mut expected = links_before.clone();
    expected.push(second_veth.to_string());
    expected.sort();
    assert_eq!(sorted_link_names(&scenario.host), expected);
    assert!(
        ping(&second, GATEWAY),
        "second container: gateway unreachable"
    );
    cniwasm(&scenario, "check", &second).assert_success();

    cniwasm(&scenario, "del", &container).assert_success();
    let first_veth = ours["interfaces"][1]["name"].as_str().unwrap();
    expected.retain(|name| name != first_veth);
    assert_eq!(sorted_link_names(&scenario.host), expected);
    assert_eq!(container.link_names(), ["lo"]);
    assert!(ping(&second, GATEWAY), "the gateway went away with DEL");

    cniwasm(&scenario, "del", &second).assert_success();
    let mut expected = ["lo", BRIDGE, GATEWAY_LINK, &peer].map(String::from);
    expected.sort();
    assert_eq!(sorted_link_names(&scenario.host), expected);
    assert_eq!(
        scenario.host.global_addresses(GATEWAY_LINK),
        [format!("{GATEWAY}/24")]
    );
    assert!(scenario.reservations(NETWORK).is_empty());
}

/// `vlanTrunk` with `isGateway` but no `vlan`: the gateway address stays on
/// the bridge, which is in the trunk's native VLAN 1, and the result has 3
/// interfaces. The result equals the reference's, which ignores
/// `vlanTrunk` and so never needs VLAN filtering.
#[test]
fn vlan_trunk_gateway_on_bridge() {
    if !require_root() {
        return;
    }
    let options = json!({"vlanTrunk": [{"id": 101}], "isGateway": true});
    let SideBySide {
        scenario,
        container,
        reference,
        ours,
        theirs,
    } = SideBySide::add(&options, "1.0.0");

    let theirs = theirs.expect("the reference runs 1.0.0");
    let theirs = theirs.expect("the reference ADD");

    if !vlan_filtering_supported(&scenario.host) {
        assert!(!ours.status.success(), "ADD succeeded: {}", ours.stdout);
        let error = ours.json();
        assert_eq!(error["code"], json!(999), "{error}");
        assert!(scenario.reservations(NETWORK).is_empty());
        assert_nothing_left(&scenario, &container, "cniwasm");
        return;
    }
    let ours = ours.assert_success().json();
    assert_eq!(normalize_result(&ours), normalize_result(&theirs));
    assert_eq!(ours["interfaces"].as_array().unwrap().len(), 3, "{ours}");

    let runs = [
        ("cniwasm", &scenario.host, &container),
        ("reference", &reference.scenario.host, &reference.container),
    ];
    for (name, host, container) in runs {
        let gateway_cidr = format!("{GATEWAY}/24");
        assert_eq!(host.global_addresses(BRIDGE), [gateway_cidr], "{name}");
        assert_eq!(host.link_names().len(), 3, "{name}: lo, bridge, veth");
        assert!(ping(container, GATEWAY), "{name}: gateway unreachable");
    }
    cniwasm(&scenario, "check", &container).assert_success();
    cniwasm(&scenario, "del", &container).assert_success();
    assert_eq!(
        scenario.host.link_names().len(),
        2,
        "lo and the bridge stay"
    );
}

/// An ADD that fails after the VLAN gateway pair was created (here the
/// nftables masquerade, without `nft` on cniwasm's `PATH`) is rolled back
/// with the pair: only `lo` stays in both namespaces.
#[test]
fn vlan_gateway_failed_add_leaves_nothing() {
    if !require_root() {
        return;
    }
    let options = json!({"vlan": 100, "isGateway": true, "ipMasq": true,
        "ipMasqBackend": "nftables"});
    let scenario = vlan_scenario(&options, "1.0.0");
    let container = Netns::create("cwc");
    let netns = container.path().to_str().unwrap().to_string();
    // A PATH with `ip` alone, which runs cniwasm in the host namespace.
    let bin = ip_only_path(scenario.dir.path());
    let path = bin.to_str().unwrap();

    let output = scenario.cniwasm(&["add", NETWORK, &netns], &[("PATH", path)]);

    assert!(!output.status.success(), "ADD succeeded: {}", output.stdout);
    let error = output.json();
    assert_eq!(error["code"], json!(999), "{error}");
    if vlan_filtering_supported(&scenario.host) {
        let message = error["msg"].as_str().unwrap();
        assert!(message.contains("nftables masquerade"), "{message}");
    }
    assert!(scenario.reservations(NETWORK).is_empty());
    assert_nothing_left(&scenario, &container, "cniwasm");
}

/// Four ADDs on one VLAN at once: the first to create `<bridge>.<vlan>`
/// wins, the others reuse it, and every container reaches the gateway.
#[test]
fn vlan_gateway_concurrent_adds() {
    if !require_root() {
        return;
    }
    let scenario = vlan_scenario(&json!({"vlan": 100, "isGateway": true}), "1.0.0");
    let containers: Vec<Netns> = (0..4).map(|_| Netns::create("cwc")).collect();

    let outputs: Vec<CliOutput> = std::thread::scope(|scope| {
        let runs: Vec<_> = containers
            .iter()
            .map(|container| scope.spawn(|| cniwasm(&scenario, "add", container)))
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    });

    if !vlan_filtering_supported(&scenario.host) {
        for output in &outputs {
            assert!(!output.status.success(), "ADD succeeded: {}", output.stdout);
        }
        return;
    }
    for output in &outputs {
        output.assert_success();
    }
    let gateways = scenario.host.link_names();
    let gateways = gateways.iter().filter(|name| name.contains('.'));
    assert_eq!(gateways.collect::<Vec<_>>(), [GATEWAY_LINK]);
    for container in &containers {
        assert!(ping(container, GATEWAY), "gateway unreachable");
    }
}

/// `vlan` with `isGateway` at every spec version: the result equals the
/// reference's, lists `vlbr0.100` as a 4th interface from 0.3.0 on (older
/// results list no interfaces), and the gateway address is on that link.
#[test]
fn vlan_gateway_every_version() {
    if !require_root() {
        return;
    }
    for version in VERSIONS {
        let run = SideBySide::add(&json!({"vlan": 100, "isGateway": true}), version);
        let Some(run) = run.vlans_supported() else {
            continue;
        };

        let ours = run.ours.assert_success().json();
        if !["0.1.0", "0.2.0"].contains(&version) {
            let interfaces = ours["interfaces"].as_array().unwrap();
            assert_eq!(interfaces.len(), 4, "{version}: {ours}");
            assert_eq!(interfaces[3]["name"], GATEWAY_LINK, "{version}");
        }
        let gateway = run.scenario.host.global_addresses(GATEWAY_LINK);
        assert_eq!(gateway, [format!("{GATEWAY}/24")], "{version}");
        if let Some(theirs) = run.theirs {
            let theirs = theirs.expect("the reference ADD");
            assert_eq!(
                normalize_result(&ours),
                normalize_result(&theirs),
                "{version}"
            );
        }

        cniwasm(&run.scenario, "del", &run.container).assert_success();
    }
}
