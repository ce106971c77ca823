//! A third-party plugin built only on the SDK: the static-route example from
//! `examples/static-route-plugin`, chained after bridge + host-local as
//! `examples/static-route/mynet-static-route.conflist` lists it, run by the
//! `cniwasm` CLI inside a throwaway host namespace.

use std::path::PathBuf;

use cniwasm_integration_tests::{
    CliOutput, Netns, Scenario, assert_cni_error, plugin_dir, repo_root, require_root,
};
use serde_json::{Value, json};

const NETWORK: &str = "mynet";
const BRIDGE: &str = "mynet-sr";

/// Directory of the built example plugin. `plugin_dir` covers only the
/// project's own plugins.
fn example_plugin_dir() -> PathBuf {
    let dir = repo_root().join("examples/static-route-plugin/out");
    assert!(
        dir.join("static-route.wasm").is_file(),
        "static-route example not built in {}: run plugins-wasm/build.sh or `make build` first",
        dir.display()
    );
    dir
}

/// CNI_PATH with the project's plugins first, then the example.
fn cni_path() -> String {
    format!(
        "{}:{}",
        plugin_dir().display(),
        example_plugin_dir().display()
    )
}

fn example_scenario() -> Scenario {
    let scenario = Scenario::new();
    let path = repo_root().join("examples/static-route/mynet-static-route.conflist");
    let conflist = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", path.display()));
    scenario.write_config("10-mynet.conflist", &conflist);
    scenario
}

fn run(scenario: &Scenario, command: &str, container: &Netns) -> CliOutput {
    let netns = container.path();
    let cni_path = cni_path();
    scenario.cniwasm(
        &[command, NETWORK, netns.to_str().unwrap()],
        &[("CNI_PATH", &cni_path)],
    )
}

/// Routes to `dst` in the container, as `ip -j route show` prints them.
fn routes_to(container: &Netns, dst: &str) -> Vec<Value> {
    container
        .ip_json(&["route", "show", dst])
        .as_array()
        .expect("ip -j route prints an array")
        .clone()
}

fn container_sysctl(container: &Netns, path: &str) -> String {
    container
        .exec_ok(&["cat", &format!("/proc/sys/{path}")])
        .trim()
        .to_string()
}

#[test]
fn static_route_add_check_del() {
    if !require_root() {
        return;
    }
    let scenario = example_scenario();
    let container = Netns::create("cwc");

    let add = run(&scenario, "add", &container);
    add.assert_success();
    let result = add.json();

    // The result is bridge's, in 0.4.0, with the static route appended.
    assert_eq!(result["cniVersion"], json!("0.4.0"));
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0"}, {"dst": "10.250.0.0/16", "gw": "10.244.20.1"}])
    );
    assert_eq!(result["ips"][0]["address"], json!("10.244.20.2/24"));

    let routes = routes_to(&container, "10.250.0.0/16");
    assert_eq!(routes.len(), 1, "{routes:?}");
    assert_eq!(routes[0]["gateway"], json!("10.244.20.1"));
    assert_eq!(routes[0]["dev"], json!("eth0"));
    assert_eq!(
        container_sysctl(&container, "net/ipv4/conf/eth0/arp_ignore"),
        "1"
    );

    run(&scenario, "check", &container).assert_success();

    run(&scenario, "del", &container).assert_success();

    assert!(routes_to(&container, "10.250.0.0/16").is_empty());
    assert_eq!(container.link_names(), vec!["lo"]);
    let mut host_links = scenario.host.link_names();
    host_links.sort();
    assert_eq!(host_links, vec!["lo", BRIDGE]);
    assert!(
        scenario.reservations(NETWORK).is_empty(),
        "reservations left: {:?}",
        scenario.reservations(NETWORK)
    );
    assert!(
        scenario.cache_files().is_empty(),
        "cache files left: {:?}",
        scenario.cache_files()
    );
}

#[test]
fn static_route_check_detects_sysctl_change() {
    if !require_root() {
        return;
    }
    let scenario = example_scenario();
    let container = Netns::create("cwc");
    run(&scenario, "add", &container).assert_success();

    container.exec_ok(&["sysctl", "-qw", "net.ipv4.conf.eth0.arp_ignore=0"]);
    let check = run(&scenario, "check", &container);

    assert_cni_error(&check, 999, "net.ipv4.conf.eth0.arp_ignore");
    run(&scenario, "del", &container).assert_success();
}

#[test]
fn static_route_del_after_netns_removed() {
    if !require_root() {
        return;
    }
    let scenario = example_scenario();
    let container = Netns::create("cwc");
    run(&scenario, "add", &container).assert_success();

    container.delete();
    run(&scenario, "del", &container).assert_success();

    assert!(scenario.reservations(NETWORK).is_empty());
    assert!(scenario.cache_files().is_empty());
}

#[test]
fn static_route_bad_dst_rolls_back() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let container = Netns::create("cwc");
    let path = repo_root().join("examples/static-route/mynet-static-route.conflist");
    let conflist = std::fs::read_to_string(path)
        .unwrap()
        .replace("10.250.0.0/16", "10.250.0.0/33");
    scenario.write_config("10-mynet.conflist", &conflist);

    let add = run(&scenario, "add", &container);

    assert_cni_error(&add, 7, "routes[0].dst \"10.250.0.0/33\"");
    assert_eq!(container.link_names(), vec!["lo"]);
    assert_eq!(scenario.host.link_names(), vec!["lo"]);
    assert!(scenario.reservations(NETWORK).is_empty());
    assert!(scenario.cache_files().is_empty());
}

#[test]
fn static_route_under_restrictive_policy() {
    if !require_root() {
        return;
    }
    let scenario = example_scenario();
    let container = Netns::create("cwc");
    let audit_log = scenario.dir.path().join("audit.log");
    let policy_text =
        std::fs::read_to_string(repo_root().join("examples/policies/static-route-policy.json"))
            .unwrap()
            .replace("/var/log/cniwasm/audit.log", audit_log.to_str().unwrap());
    let policy = scenario.dir.path().join("policy.json");
    std::fs::write(&policy, policy_text).unwrap();
    let cni_path = cni_path();
    let env = [
        ("CNI_PATH", cni_path.as_str()),
        ("CNIWASM_POLICY", policy.to_str().unwrap()),
    ];
    let netns = container.path();

    scenario
        .cniwasm(&["add", NETWORK, netns.to_str().unwrap()], &env)
        .assert_success();

    // The audit log shows exactly the plugin's two calls, both allowed.
    let records: Vec<Value> = std::fs::read_to_string(&audit_log)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|record: &Value| record["plugin"] == "static-route")
        .collect();
    let calls: Vec<(String, String)> = records
        .iter()
        .filter(|record| record["kind"] == "host-call")
        .map(|record| {
            (
                record["operation"].as_str().unwrap().to_string(),
                record["decision"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            ("route.add".to_string(), "allow".to_string()),
            ("sysctl.set".to_string(), "allow".to_string())
        ],
        "{records:#?}"
    );
    let summary = records
        .iter()
        .find(|record| record["kind"] == "plugin-call")
        .expect("a plugin-call record");
    assert_eq!(summary["outcome"], json!("ok"));
    assert_eq!(summary["hostCalls"], json!(2));

    scenario
        .cniwasm(&["del", NETWORK, netns.to_str().unwrap()], &env)
        .assert_success();

    // A route outside the policy's subnets is denied, and the chain rolls back.
    let path = repo_root().join("examples/static-route/mynet-static-route.conflist");
    let conflist = std::fs::read_to_string(path)
        .unwrap()
        .replace("10.250.0.0/16", "10.251.0.0/16");
    scenario.write_config("10-mynet.conflist", &conflist);
    let output = scenario.cniwasm(&["add", NETWORK, netns.to_str().unwrap()], &env);
    assert!(
        !output.status.success(),
        "a route outside 10.250.0.0/16 was allowed"
    );
    assert_eq!(output.json()["code"], json!(100), "{}", output.stdout);
    assert!(
        output.json()["msg"]
            .as_str()
            .unwrap()
            .contains("routes.container"),
        "{}",
        output.stdout
    );
    assert_eq!(container.link_names(), vec!["lo"]);
    assert!(scenario.reservations(NETWORK).is_empty());
}
