//! The bridge's `macspoofchk` against the real kernel, in a throwaway host
//! namespace per test. Two containers on one bridge reach each other until
//! one changes its MAC by hand, and the nftables chains of each attachment
//! go away on DEL. A host without `nft` fails ADD with a message that names
//! the package to install. Traffic stays between the test's own namespaces.

use cniwasm_integration_tests::{
    CliOutput, Netns, Scenario, assert_cni_error, container_id, ip_only_path, require_root,
};
use serde_json::{Value, json};

const NETWORK: &str = "spoofnet";

/// A locally administered unicast MAC that no veth gets from the kernel
/// in these tests, for the container that changes its own.
const SPOOFED_MAC: &str = "02:00:5e:10:00:01";

/// Returns a bridge + host-local list on bridge `spoofbr`, with
/// `macspoofchk` set to `mac_spoof_check`.
fn list(mac_spoof_check: bool) -> String {
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {"type": "bridge", "bridge": "spoofbr", "macspoofchk": mac_spoof_check,
             "ipam": {"type": "host-local", "subnet": "10.244.91.0/24"}}
        ]
    })
    .to_string()
}

fn scenario(mac_spoof_check: bool) -> Scenario {
    let scenario = Scenario::new();
    scenario.write_config("10-spoofnet.conflist", &list(mac_spoof_check));
    scenario
}

fn run(scenario: &Scenario, command: &str, container: &Netns) -> CliOutput {
    let netns = container.path().to_str().unwrap().to_string();
    scenario.cniwasm(&[command, NETWORK, &netns], &[])
}

/// Adds containers A and B; returns them and B's address.
fn add_two(scenario: &Scenario) -> (Netns, Netns, String) {
    let a = Netns::create("cwc");
    let b = Netns::create("cwc");
    run(scenario, "add", &a).assert_success();
    let b_address = address(&run(scenario, "add", &b).assert_success().json());
    (a, b, b_address)
}

/// Returns the container's address without its prefix length.
fn address(result: &Value) -> String {
    let cidr = result["ips"][0]["address"].as_str().unwrap();
    cidr.split('/').next().unwrap().to_string()
}

/// Tells whether `from` gets an echo reply from `to` within three tries.
fn pings(from: &Netns, to: &str) -> bool {
    let output = from.exec(&["busybox", "ping", "-c", "3", "-W", "1", to]);
    output.status.success()
}

fn mac(container: &Netns) -> String {
    let links = container.ip_json(&["link", "show", "dev", "eth0"]);
    links[0]["address"].as_str().unwrap().to_string()
}

fn set_mac(container: &Netns, mac: &str) {
    container.exec_ok(&["ip", "link", "set", "dev", "eth0", "address", mac]);
}

/// Returns the chain names and comment the reference gives the check of
/// `container`'s `eth0`.
fn spoof_check_names(container: &Netns) -> [String; 3] {
    let id = container_id(container.path().to_str().unwrap());
    [
        format!("cni-br-iface-{id}-eth0"),
        format!("cni-br-iface-{id}-eth0-mac"),
        format!("macspoofchk-{id}-eth0"),
    ]
}

/// Returns the objects of table `bridge nat` that belong to `container`'s
/// check: its two chains and every rule in them or with its comment.
fn own_objects(host: &Netns, container: &Netns) -> Vec<Value> {
    let [iface_chain, mac_chain, comment] = spoof_check_names(container);
    let ours = |name: &Value| name == iface_chain.as_str() || name == mac_chain.as_str();
    host.nft_table("bridge", "nat")
        .into_iter()
        .filter(|object| {
            ours(&object["chain"]["name"])
                || ours(&object["rule"]["chain"])
                || object["rule"]["comment"] == comment.as_str()
        })
        .collect()
}

/// Two containers on one bridge with `macspoofchk`: they reach each other,
/// container A's pings fail once A has changed its MAC by hand, and work
/// again with A's own MAC. DEL removes each container's chains and jump,
/// and keeps the shared table and base chain, as the reference does.
#[test]
fn changed_mac_is_dropped() {
    if !require_root() {
        return;
    }
    let scenario = scenario(true);
    let (a, b, b_address) = add_two(&scenario);

    assert!(pings(&a, &b_address), "A cannot reach B before the change");
    for container in [&a, &b] {
        assert_eq!(
            own_objects(&scenario.host, container).len(),
            6,
            "two chains and four rules per container: {:#?}",
            scenario.host.nft_table("bridge", "nat")
        );
    }

    let own_mac = mac(&a);
    set_mac(&a, SPOOFED_MAC);
    assert!(
        !pings(&a, &b_address),
        "A reached B from MAC {SPOOFED_MAC}, not its own {own_mac}"
    );
    set_mac(&a, &own_mac);
    assert!(pings(&a, &b_address), "A cannot reach B with its own MAC");

    for container in [&a, &b] {
        run(&scenario, "del", container).assert_success();
        assert_eq!(own_objects(&scenario.host, container), Vec::<Value>::new());
    }
    let left = scenario.host.nft_table("bridge", "nat");
    assert_eq!(
        left,
        vec![
            json!({"table": {"family": "bridge", "name": "nat"}}),
            json!({"chain": {"family": "bridge", "table": "nat", "name": "PREROUTING",
                "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept"}}),
        ],
        "only the shared table and base chain stay"
    );
    run(&scenario, "del", &a).assert_success();
}

/// The control for [`changed_mac_is_dropped`]: without `macspoofchk`, the
/// same change of MAC keeps A reaching B, so the drop there comes from the
/// check. No table `bridge nat` is created.
#[test]
fn changed_mac_passes_without_check() {
    if !require_root() {
        return;
    }
    let scenario = scenario(false);
    let (a, b, b_address) = add_two(&scenario);

    set_mac(&a, SPOOFED_MAC);

    assert!(pings(&a, &b_address), "A cannot reach B after the change");
    assert_eq!(
        scenario.host.nft_table("bridge", "nat"),
        Vec::<Value>::new()
    );
    for container in [&a, &b] {
        run(&scenario, "del", container).assert_success();
    }
}

/// A DEL after the container's namespace is gone still removes the check,
/// where the reference plugin (v1.1.1) returns before it.
#[test]
fn del_without_netns_removes_check() {
    if !require_root() {
        return;
    }
    let scenario = scenario(true);
    let container = Netns::create("cwc");
    run(&scenario, "add", &container).assert_success();
    assert!(!own_objects(&scenario.host, &container).is_empty());

    container.delete();
    run(&scenario, "del", &container).assert_success();

    assert_eq!(own_objects(&scenario.host, &container), Vec::<Value>::new());
    assert!(scenario.reservations(NETWORK).is_empty());
}

/// Without `nft` in cniwasm's `PATH`, ADD fails with code 999 and a message
/// that names the host veth and the fix, and rolls back: no link, address
/// or table is left.
#[test]
fn missing_nft_fails_add() {
    if !require_root() {
        return;
    }
    let scenario = scenario(true);
    let container = Netns::create("cwc");
    let host_links = scenario.host.link_names();
    let netns = container.path().to_str().unwrap().to_string();
    // A PATH with `ip` alone, which runs cniwasm in the host namespace;
    // cniwasm itself starts no other program for this list.
    let bin = ip_only_path(scenario.dir.path());
    let path = bin.to_str().unwrap();

    let output = scenario.cniwasm(&["add", NETWORK, &netns], &[("PATH", path)]);

    let error = assert_cni_error(&output, 999, "install nftables");
    let message = error["msg"].as_str().unwrap();
    assert!(
        message.contains("macspoofchk failed on host veth \"veth"),
        "{message}"
    );
    scenario.assert_nothing_left(NETWORK, &host_links, &container);
    assert_eq!(
        scenario.host.nft_table("bridge", "nat"),
        Vec::<Value>::new()
    );
}
