//! The seed scenario against the real kernel: bridge + host-local + portmap
//! from `examples/mynet.conflist`, run by the `cniwasm` CLI inside a
//! throwaway host namespace.

use cniwasm_integration_tests::{
    HttpServer, Netns, Scenario, container_id, http_get, repo_root, require_root,
};
use serde_json::{Value, json};

const CAP_ARGS: &str = r#"{"portMappings":[{"hostPort":9090,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]}"#;

fn seed_scenario() -> Scenario {
    let scenario = Scenario::new();
    let conflist = std::fs::read_to_string(repo_root().join("examples/mynet.conflist")).unwrap();
    scenario.write_config("10-mynet.conflist", &conflist);
    scenario
}

fn add(scenario: &Scenario, container: &Netns) -> Value {
    let netns = container.path();
    let output = scenario.cniwasm(
        &["add", "mynet", netns.to_str().unwrap()],
        &[("CAP_ARGS", CAP_ARGS)],
    );
    output.assert_success();
    output.json()
}

fn del(scenario: &Scenario, netns: &str) {
    scenario
        .cniwasm(&["del", "mynet", netns], &[("CAP_ARGS", CAP_ARGS)])
        .assert_success();
}

#[test]
fn seed_add_result_and_kernel_state() {
    if !require_root() {
        return;
    }
    let scenario = seed_scenario();
    let container = Netns::create("cwc");
    let netns = container.path().to_str().unwrap().to_string();

    let result = add(&scenario, &container);

    // The result has the 0.3.0 shape of the reference bridge plugin.
    assert_eq!(result["cniVersion"], json!("0.3.0"));
    let interfaces = result["interfaces"].as_array().unwrap();
    assert_eq!(interfaces.len(), 3);
    assert_eq!(interfaces[0]["name"], json!("mynet"));
    let host_veth = interfaces[1]["name"].as_str().unwrap().to_string();
    assert!(
        host_veth.starts_with("veth") && host_veth.len() == 12,
        "host veth {host_veth}"
    );
    assert_eq!(interfaces[2]["name"], json!("eth0"));
    assert_eq!(interfaces[2]["sandbox"], json!(netns));
    for interface in interfaces {
        assert_eq!(interface["mac"].as_str().unwrap().len(), 17, "{interface}");
    }
    assert_eq!(
        result["ips"],
        json!([{"version": "4", "interface": 2, "address": "10.244.10.2/24", "gateway": "10.244.10.1"}])
    );
    assert_eq!(result["routes"], json!([{"dst": "0.0.0.0/0"}]));
    assert_eq!(result["dns"], json!({}));

    // The container has its address and a default route via the gateway.
    let addresses = container.ip_json(&["addr", "show", "eth0"]);
    let address_info = &addresses[0]["addr_info"];
    assert!(
        address_info
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["local"] == json!("10.244.10.2") && a["prefixlen"] == json!(24)),
        "{address_info}"
    );
    let routes = container.ip_json(&["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], json!("10.244.10.1"), "{routes}");
    assert_eq!(routes[0]["dev"], json!("eth0"));

    // The host veth is a port of bridge mynet, which carries the gateway.
    let veth = scenario.host.ip_json(&["link", "show", &host_veth]);
    assert_eq!(veth[0]["master"], json!("mynet"));
    let bridge = scenario.host.ip_json(&["addr", "show", "mynet"]);
    assert!(
        bridge[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["local"] == json!("10.244.10.1")),
        "{bridge}"
    );
    assert_eq!(bridge[0]["address"], interfaces[0]["mac"]);

    // NAT: the DNAT rule and the masquerade chain of the reference plugins.
    let id = container_id(&netns);
    let rules = scenario.host.nat_rules();
    let dnat = "-d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j DNAT --to-destination 10.244.10.2:80";
    assert!(
        rules
            .iter()
            .any(|rule| rule.starts_with("-A CNI-DN-") && rule.ends_with(dnat)),
        "{rules:#?}"
    );
    let comment = format!("-m comment --comment \"name: \\\"mynet\\\" id: \\\"{id}\\\"\"");
    assert!(
        rules
            .iter()
            .any(|rule| rule.starts_with("-A POSTROUTING -s 10.244.10.2/32")
                && rule.contains(&comment)),
        "{rules:#?}"
    );

    // Traffic: the container serves HTTP on its address and through the mapping.
    let _server = HttpServer::start(&container, 80, "seed says hello");
    assert_eq!(
        http_get(&scenario.host, "http://10.244.10.2:80/").as_deref(),
        Some("seed says hello")
    );
    assert_eq!(
        http_get(&scenario.host, "http://127.0.0.1:9090/").as_deref(),
        Some("seed says hello")
    );
    let ping = container.exec(&["busybox", "ping", "-c", "1", "-W", "2", "10.244.10.1"]);
    assert!(
        ping.status.success(),
        "the container cannot reach its gateway"
    );

    del(&scenario, &netns);
}

#[test]
fn seed_del_removes_everything_it_added() {
    if !require_root() {
        return;
    }
    let scenario = seed_scenario();
    let container = Netns::create("cwc");
    let netns = container.path().to_str().unwrap().to_string();
    let links_before = scenario.host.link_names();

    let result = add(&scenario, &container);
    let host_veth = result["interfaces"][1]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        scenario.reservations("mynet"),
        vec!["10.244.10.2".to_string()]
    );
    assert_eq!(scenario.cache_files().len(), 1);

    del(&scenario, &netns);

    let links = scenario.host.link_names();
    assert!(!links.contains(&host_veth), "{links:?}");
    assert!(
        links.contains(&"mynet".to_string()),
        "the shared bridge is kept, as the reference keeps it"
    );
    assert_eq!(links.len(), links_before.len() + 1);
    assert!(!container.link_names().contains(&"eth0".to_string()));
    let rules = scenario.host.nat_rules();
    assert!(
        !rules.iter().any(|rule| rule.contains("CNI-DN-")),
        "{rules:#?}"
    );
    assert!(
        !rules.iter().any(|rule| rule.contains("10.244.10.2")),
        "{rules:#?}"
    );
    assert!(scenario.reservations("mynet").is_empty());
    assert!(scenario.cache_files().is_empty());

    // A second DEL finds nothing to do and succeeds.
    del(&scenario, &netns);
}

#[test]
fn seed_del_after_netns_removed() {
    if !require_root() {
        return;
    }
    let scenario = seed_scenario();
    let container = Netns::create("cwc");
    let netns = container.path().to_str().unwrap().to_string();
    add(&scenario, &container);

    container.delete();
    del(&scenario, &netns);

    let rules = scenario.host.nat_rules();
    assert!(
        !rules.iter().any(|rule| rule.contains("CNI-DN-")),
        "{rules:#?}"
    );
    assert!(
        !rules.iter().any(|rule| rule.contains("10.244.10.2")),
        "{rules:#?}"
    );
    assert!(scenario.reservations("mynet").is_empty());
    assert!(scenario.cache_files().is_empty());
}

#[test]
fn three_containers_get_consecutive_addresses() {
    if !require_root() {
        return;
    }
    let scenario = seed_scenario();
    let containers: Vec<Netns> = (0..3).map(|_| Netns::create("cwc")).collect();

    let mut addresses = Vec::new();
    for container in &containers {
        let netns = container.path();
        // Each needs its own host port: the reference does not reserve ports either.
        let output = scenario.cniwasm(&["add", "mynet", netns.to_str().unwrap()], &[]);
        output.assert_success();
        addresses.push(
            output.json()["ips"][0]["address"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        addresses,
        ["10.244.10.2/24", "10.244.10.3/24", "10.244.10.4/24"]
    );

    // They reach each other over the bridge.
    for (from, to) in [(0, "10.244.10.3"), (1, "10.244.10.4"), (2, "10.244.10.2")] {
        let ping = containers[from].exec(&["busybox", "ping", "-c", "1", "-W", "2", to]);
        assert!(ping.status.success(), "container {from} cannot reach {to}");
    }

    for container in &containers {
        scenario
            .cniwasm(&["del", "mynet", container.path().to_str().unwrap()], &[])
            .assert_success();
    }
    assert!(scenario.reservations("mynet").is_empty());
}

#[test]
fn check_passes_after_add_and_fails_after_damage() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let conflist = std::fs::read_to_string(repo_root().join("examples/mynet.conflist")).unwrap();
    scenario.write_config(
        "10-mynet.conflist",
        &conflist.replace("\"0.3.0\"", "\"0.4.0\""),
    );
    let container = Netns::create("cwc");
    let netns = container.path().to_str().unwrap().to_string();
    let env = [("CAP_ARGS", CAP_ARGS)];

    scenario
        .cniwasm(&["add", "mynet", &netns], &env)
        .assert_success();
    scenario
        .cniwasm(&["check", "mynet", &netns], &env)
        .assert_success();

    // Removing the container's address makes CHECK fail.
    container.exec_ok(&["ip", "addr", "del", "10.244.10.2/24", "dev", "eth0"]);
    let output = scenario.cniwasm(&["check", "mynet", &netns], &env);
    assert!(
        !output.status.success(),
        "CHECK passed without the address: {}",
        output.stdout
    );
    assert!(
        output.json()["msg"].as_str().unwrap().contains("bridge"),
        "{}",
        output.stdout
    );

    scenario
        .cniwasm(&["del", "mynet", &netns], &env)
        .assert_success();
}

#[test]
fn check_rejected_for_0_3_0() {
    if !require_root() {
        return;
    }
    let scenario = seed_scenario();
    let container = Netns::create("cwc");
    let output = scenario.cniwasm(&["check", "mynet", container.path().to_str().unwrap()], &[]);
    assert!(!output.status.success());
    assert_eq!(output.json()["code"], json!(1));
}

#[test]
fn second_add_keeps_first_attachment() {
    if !require_root() {
        return;
    }
    let scenario = seed_scenario();
    let container = Netns::create("cwc");
    let netns = container.path().to_str().unwrap().to_string();
    add(&scenario, &container);
    let rules_before = scenario.host.nat_rules();

    let again = scenario.cniwasm(&["add", "mynet", &netns], &[("CAP_ARGS", CAP_ARGS)]);

    assert!(
        !again.status.success(),
        "a second ADD succeeded: {}",
        again.stdout
    );
    assert_eq!(again.json()["code"], json!(4));
    assert!(
        again.json()["msg"]
            .as_str()
            .unwrap()
            .contains("run DEL first"),
        "{}",
        again.stdout
    );
    assert!(
        container.link_names().contains(&"eth0".to_string()),
        "the first attachment was torn down"
    );
    assert_eq!(scenario.host.nat_rules(), rules_before);
    assert_eq!(
        scenario.reservations("mynet"),
        vec!["10.244.10.2".to_string()]
    );
    let _server = HttpServer::start(&container, 80, "still attached");
    assert_eq!(
        http_get(&scenario.host, "http://127.0.0.1:9090/").as_deref(),
        Some("still attached")
    );

    del(&scenario, &netns);
}

#[test]
fn loopback_sets_lo_up_and_down() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config(
        "10-lo.conflist",
        r#"{"cniVersion": "1.0.0", "name": "lonet", "plugins": [{"type": "loopback"}]}"#,
    );
    let container = Netns::create("cwc");
    container.exec_ok(&["ip", "link", "set", "lo", "down"]);
    let netns = container.path().to_str().unwrap().to_string();

    let output = scenario.cniwasm(&["add", "lonet", &netns], &[("CNI_IFNAME", "lo")]);
    output.assert_success();
    let result = output.json();
    assert_eq!(result["interfaces"][0]["name"], json!("lo"));
    assert_eq!(result["interfaces"][0]["sandbox"], json!(netns));
    assert_eq!(result["ips"][0]["address"], json!("127.0.0.1/8"));
    let lo = container.ip_json(&["link", "show", "lo"]);
    assert!(
        lo[0]["flags"].as_array().unwrap().contains(&json!("UP")),
        "{lo}"
    );

    scenario
        .cniwasm(&["check", "lonet", &netns], &[("CNI_IFNAME", "lo")])
        .assert_success();
    scenario
        .cniwasm(&["del", "lonet", &netns], &[("CNI_IFNAME", "lo")])
        .assert_success();
    let lo = container.ip_json(&["link", "show", "lo"]);
    assert!(
        !lo[0]["flags"].as_array().unwrap().contains(&json!("UP")),
        "{lo}"
    );
}
