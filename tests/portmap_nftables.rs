//! portmap's and the bridge's nftables backends against the real kernel,
//! in a throwaway host namespace per test. A server in a container is
//! reached through the mapped port from the host, through the bridge's
//! address and through 127.0.0.1, and from containers on the same bridge
//! (hairpin). Traffic stays between the test's own namespaces.
//!
//! The reference plugins installed for the side-by-side tests are v1.1.1,
//! which has no nftables backend, so the rule layout is compared with the
//! reference's own test vectors in host-api/tests/linux_kernel.rs instead.

use cniwasm_integration_tests::{
    CliOutput, HttpServer, Netns, Scenario, assert_cni_error, container_id, http_get, ip_only_path,
    require_root,
};
use serde_json::{Value, json};

const NETWORK: &str = "nftnet";
const SUBNET: &str = "10.244.94.0/24";
const GATEWAY: &str = "10.244.94.1";
const HOST_PORT: u16 = 8090;

const CAP_ARGS: &str =
    r#"{"portMappings":[{"hostPort":8090,"containerPort":80,"protocol":"tcp"}]}"#;

/// Returns bridge and portmap, both with the nftables backend, and
/// `portmap`'s extra keys. The bridge sets `hairpinMode`: where
/// br_netfilter is loaded, a container's request to the mapped port is
/// DNATed while it crosses the bridge and leaves through the port it came
/// in by, which a bridge port forwards only in hairpin mode.
fn list(portmap: Value) -> String {
    let mut portmap_entry = json!({"type": "portmap", "backend": "nftables",
        "capabilities": {"portMappings": true}});
    for (key, value) in portmap.as_object().unwrap() {
        portmap_entry[key] = value.clone();
    }
    json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {"type": "bridge", "bridge": "nftbr", "isGateway": true, "ipMasq": true,
             "ipMasqBackend": "nftables", "hairpinMode": true,
             "ipam": {"type": "host-local", "subnet": SUBNET}},
            portmap_entry
        ]
    })
    .to_string()
}

fn scenario(portmap: Value) -> Scenario {
    let scenario = Scenario::new();
    scenario.write_config("10-nftnet.conflist", &list(portmap));
    scenario
}

fn run(scenario: &Scenario, command: &str, container: &Netns) -> CliOutput {
    let netns = container.path().to_str().unwrap().to_string();
    scenario.cniwasm(&[command, NETWORK, &netns], &[("CAP_ARGS", CAP_ARGS)])
}

/// Returns the container's address without its prefix length.
fn address(result: &Value) -> String {
    let cidr = result["ips"][0]["address"].as_str().unwrap();
    cidr.split('/').next().unwrap().to_string()
}

/// Returns the lines of `nft list table FAMILY NAME` in the host
/// namespace, trimmed; none when the table is missing.
fn listed(host: &Netns, family: &str, table: &str) -> Vec<String> {
    let output = host.exec(&["nft", "list", "table", family, table]);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().to_string())
        .collect()
}

/// Returns the rules of both port-mapping tables that carry `container`'s
/// id as comment.
fn port_mapping_rules(host: &Netns, container: &Netns) -> Vec<String> {
    let comment = format!(
        "comment \"{}\"",
        container_id(container.path().to_str().unwrap())
    );
    let mut rules = listed(host, "ip", "cni_hostport");
    rules.extend(listed(host, "ip6", "cni_hostport"));
    rules.retain(|line| line.ends_with(&comment));
    rules
}

/// Returns the masquerade rules whose source is `address`.
fn masquerade_rules(host: &Netns, address: &str) -> Vec<String> {
    let source = format!("ip saddr {address} ");
    listed(host, "inet", "cni_plugins_masquerade")
        .into_iter()
        .filter(|line| line.starts_with(&source))
        .collect()
}

/// The mapped port reaches the container from the host through the
/// bridge's address and through 127.0.0.1, and from the container itself
/// (hairpin). The masquerade rule names the container's address, CHECK
/// passes, and DEL removes the container's rules and the forwarding.
#[test]
fn mapped_port_reaches_container() {
    if !require_root() {
        return;
    }
    let scenario = scenario(json!({}));
    let container = Netns::create("cwc");
    let result = run(&scenario, "add", &container).assert_success().json();
    let container_address = address(&result);
    let _server = HttpServer::start(&container, 80, "mapped over nftables");
    let url = format!("http://{GATEWAY}:{HOST_PORT}/");

    let expected = Some("mapped over nftables");
    assert_eq!(
        http_get(&scenario.host, &url).as_deref(),
        expected,
        "host to bridge address"
    );
    let localhost = format!("http://127.0.0.1:{HOST_PORT}/");
    assert_eq!(
        http_get(&scenario.host, &localhost).as_deref(),
        expected,
        "host to 127.0.0.1"
    );
    assert_eq!(http_get(&container, &url).as_deref(), expected, "hairpin");

    let masquerade = masquerade_rules(&scenario.host, &container_address);
    assert_eq!(masquerade.len(), 1, "{masquerade:#?}");
    assert!(
        masquerade[0].contains(&format!("ip daddr != {SUBNET} masquerade")),
        "{masquerade:#?}"
    );
    assert_eq!(
        port_mapping_rules(&scenario.host, &container).len(),
        3,
        "one DNAT and two masquerade rules"
    );
    run(&scenario, "check", &container).assert_success();

    run(&scenario, "del", &container).assert_success();

    assert_eq!(http_get(&scenario.host, &url), None);
    assert_eq!(
        port_mapping_rules(&scenario.host, &container),
        Vec::<String>::new()
    );
    assert_eq!(
        masquerade_rules(&scenario.host, &container_address),
        Vec::<String>::new()
    );
    let check = run(&scenario, "check", &container);
    assert!(
        !check.status.success(),
        "CHECK passed after DEL: {}",
        check.stdout
    );
}

/// With `masqAll`, a second container on the bridge reaches the first
/// through the host port: the reply goes back through the host because
/// the request was masqueraded. Without `masqAll` only the container's
/// own hairpin traffic is, as in the reference.
#[test]
fn second_container_reaches_first_with_masq_all() {
    if !require_root() {
        return;
    }
    let scenario = scenario(json!({"masqAll": true}));
    let first = Netns::create("cwc");
    let second = Netns::create("cwc");
    run(&scenario, "add", &first).assert_success();
    let _server = HttpServer::start(&first, 80, "first container");
    let url = format!("http://{GATEWAY}:{HOST_PORT}/");

    let listed = listed(&scenario.host, "ip", "cni_hostport");
    assert!(
        listed
            .iter()
            .any(|line| line.starts_with("ip saddr 0.0.0.0/0 ip daddr 10.244.94.")),
        "{listed:#?}"
    );
    scenario
        .cniwasm(
            &["add", NETWORK, second.path().to_str().unwrap()],
            &[("CAP_ARGS", r#"{"portMappings":[]}"#)],
        )
        .assert_success();

    assert_eq!(http_get(&second, &url).as_deref(), Some("first container"));

    run(&scenario, "del", &first).assert_success();
    assert_eq!(http_get(&second, &url), None);
    scenario
        .cniwasm(
            &["del", NETWORK, second.path().to_str().unwrap()],
            &[("CAP_ARGS", r#"{"portMappings":[]}"#)],
        )
        .assert_success();
}

/// Without `nft` in cniwasm's `PATH`, ADD fails with code 999 and a
/// message that names the package to install, and leaves no link,
/// reservation or table behind.
#[test]
fn missing_nft_fails_add() {
    if !require_root() {
        return;
    }
    let scenario = scenario(json!({}));
    let container = Netns::create("cwc");
    let host_links = scenario.host.link_names();
    let bin = ip_only_path(scenario.dir.path());
    let netns = container.path().to_str().unwrap().to_string();

    let output = scenario.cniwasm(
        &["add", NETWORK, &netns],
        &[("PATH", bin.to_str().unwrap()), ("CAP_ARGS", CAP_ARGS)],
    );

    let error = assert_cni_error(&output, 999, "install nftables");
    let message = error["msg"].as_str().unwrap();
    assert!(
        message.contains("failed to set up nftables masquerade for 10.244.94."),
        "{message}"
    );
    scenario.assert_nothing_left(NETWORK, &host_links, &container);
    let ruleset = scenario.host.exec_ok(&["nft", "list", "ruleset"]);
    assert!(!ruleset.contains("cni_"), "{ruleset}");
}

/// A condition that would jump out of the entry rule fails ADD with the
/// value named, and the rollback leaves none of the container's rules.
#[test]
fn injected_condition_rejected() {
    if !require_root() {
        return;
    }
    let scenario = scenario(
        json!({"conditionsV4": ["ip", "daddr", "!=", "10.96.0.0/12;", "flush", "ruleset"]}),
    );
    let container = Netns::create("cwc");

    let output = run(&scenario, "add", &container);

    assert_cni_error(&output, 999, "\";\"");
    assert_eq!(
        port_mapping_rules(&scenario.host, &container),
        Vec::<String>::new()
    );
    let masquerade = listed(&scenario.host, "inet", "cni_plugins_masquerade");
    assert!(
        !masquerade
            .iter()
            .any(|line| line.starts_with("ip saddr 10.244.94.")),
        "{masquerade:#?}"
    );
    assert!(scenario.reservations(NETWORK).is_empty());
}
