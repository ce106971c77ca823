//! Bad input and failures in the middle of ADD: each must print a CNI error
//! object with the right code and a message naming the value, exit non-zero,
//! and leave no link, NAT rule, reservation or cache file behind.

use cniwasm_integration_tests::{CliOutput, Netns, Scenario, assert_cni_error, require_root};

const SEED: &str = r#"{
  "name": "mynet",
  "cniVersion": "0.3.0",
  "plugins": [
    {"type": "bridge", "bridge": "mynet", "ipMasq": true, "isGateway": true,
     "ipam": {"type": "host-local", "subnet": "10.244.10.0/24", "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}"#;

const CAP_ARGS: &str = r#"{"portMappings":[{"hostPort":9090,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]}"#;

/// What a failed call may not leave behind, compared with the state before.
struct Snapshot {
    host_links: Vec<String>,
    container_links: Vec<String>,
    nat_rules: Vec<String>,
}

fn snapshot(scenario: &Scenario, container: &Netns) -> Snapshot {
    Snapshot {
        host_links: scenario.host.link_names(),
        container_links: container.link_names(),
        nat_rules: scenario.host.nat_rules(),
    }
}

fn assert_nothing_left(scenario: &Scenario, container: &Netns, before: &Snapshot) {
    assert_eq!(
        scenario.host.link_names(),
        before.host_links,
        "links left in the host namespace"
    );
    assert_eq!(
        container.link_names(),
        before.container_links,
        "links left in the container"
    );
    assert_eq!(
        scenario.host.nat_rules(),
        before.nat_rules,
        "NAT rules left behind"
    );
    assert!(
        scenario.reservations("mynet").is_empty(),
        "reservations left: {:?}",
        scenario.reservations("mynet")
    );
    assert!(
        scenario.cache_files().is_empty(),
        "cache files left: {:?}",
        scenario.cache_files()
    );
}

fn add(scenario: &Scenario, container: &Netns, env: &[(&str, &str)]) -> CliOutput {
    scenario.cniwasm(&["add", "mynet", container.path().to_str().unwrap()], env)
}

#[test]
fn invalid_json_configuration() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let container = Netns::create("cwc");
    scenario.write_config("10-mynet.conflist", "{\"name\": \"mynet\", \"plugins\": [");
    let before = snapshot(&scenario, &container);

    let output = add(&scenario, &container, &[]);

    assert_cni_error(&output, 6, "10-mynet.conflist");
    assert_nothing_left(&scenario, &container, &before);
}

#[test]
fn network_not_found() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let container = Netns::create("cwc");
    scenario.write_config("10-mynet.conflist", SEED);
    let before = snapshot(&scenario, &container);

    let output = scenario.cniwasm(
        &["add", "othernet", container.path().to_str().unwrap()],
        &[],
    );

    assert_cni_error(&output, 7, "\"othernet\"");
    assert_nothing_left(&scenario, &container, &before);
}

#[test]
fn unknown_plugin_type() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let container = Netns::create("cwc");
    scenario.write_config(
        "10-mynet.conflist",
        &SEED.replace("\"portmap\"", "\"nosuchplugin\""),
    );
    let before = snapshot(&scenario, &container);

    let output = add(&scenario, &container, &[]);

    assert_cni_error(&output, 105, "\"nosuchplugin\"");
    assert_nothing_left(&scenario, &container, &before);
}

#[test]
fn host_local_without_subnet() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let container = Netns::create("cwc");
    scenario.write_config(
        "10-mynet.conflist",
        &SEED.replace("\"subnet\": \"10.244.10.0/24\", ", ""),
    );
    let before = snapshot(&scenario, &container);

    let output = add(&scenario, &container, &[]);

    assert_cni_error(&output, 7, "subnet");
    assert_nothing_left(&scenario, &container, &before);
}

#[test]
fn malformed_cap_args() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let container = Netns::create("cwc");
    scenario.write_config("10-mynet.conflist", SEED);
    let before = snapshot(&scenario, &container);

    let output = add(
        &scenario,
        &container,
        &[("CAP_ARGS", "{\"portMappings\": [")],
    );

    assert_cni_error(&output, 6, "CAP_ARGS");
    assert_nothing_left(&scenario, &container, &before);
}

#[test]
fn portmap_failure_rolls_back_bridge() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let container = Netns::create("cwc");
    scenario.write_config("10-mynet.conflist", SEED);
    let before = snapshot(&scenario, &container);
    let port_zero = CAP_ARGS.replace("9090", "0");

    let output = add(&scenario, &container, &[("CAP_ARGS", &port_zero)]);

    assert_cni_error(&output, 7, "portmap");
    assert!(output.json()["msg"].as_str().unwrap().contains('0'));
    assert_nothing_left(&scenario, &container, &before);

    // The network still works afterwards. host-local allocates round robin,
    // so the address released by the rollback is not reused at once.
    let output = add(&scenario, &container, &[("CAP_ARGS", CAP_ARGS)]);
    output.assert_success();
    assert_eq!(output.json()["ips"][0]["address"], "10.244.10.3/24");
    scenario
        .cniwasm(&["del", "mynet", container.path().to_str().unwrap()], &[])
        .assert_success();
}

#[test]
fn missing_netns_rejected() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-mynet.conflist", SEED);
    let links_before = scenario.host.link_names();

    let output = scenario.cniwasm(
        &["add", "mynet", "/var/run/netns/cwasm-does-not-exist"],
        &[],
    );

    assert_cni_error(&output, 4, "/var/run/netns/cwasm-does-not-exist");
    assert_eq!(scenario.host.link_names(), links_before);
    assert!(scenario.cache_files().is_empty());
}
