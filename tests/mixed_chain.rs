//! Chains that mix wasm plugins with a native reference plugin
//! (`/usr/lib/cni/tuning`), run by the exec protocol when the policy allows
//! native plugins.

use cniwasm_integration_tests::reference::REFERENCE_PLUGIN_DIR;
use cniwasm_integration_tests::{Netns, Scenario, plugin_dir, require_root};
use serde_json::json;

fn mixed_list() -> String {
    json!({
        "cniVersion": "0.4.0",
        "name": "mixnet",
        "plugins": [
            {"type": "bridge", "bridge": "mixbr", "isGateway": true,
             "ipam": {"type": "host-local", "subnet": "10.244.60.0/24"}},
            {"type": "tuning", "mtu": 1400, "sysctl": {"net.ipv4.conf.eth0.arp_ignore": "2"}}
        ]
    })
    .to_string()
}

fn cni_path() -> String {
    format!("{}:{REFERENCE_PLUGIN_DIR}", plugin_dir().display())
}

#[test]
fn native_tuning_runs_after_wasm_plugins() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-mixnet.conflist", &mixed_list());
    let container = Netns::create("cwc");
    let netns = container.path().display().to_string();
    let cni_path = cni_path();

    let output = scenario.cniwasm(&["add", "mixnet", &netns], &[("CNI_PATH", &cni_path)]);
    output.assert_success();
    assert_eq!(output.json()["ips"][0]["address"], json!("10.244.60.2/24"));

    let eth0 = container.ip_json(&["link", "show", "eth0"]);
    assert_eq!(eth0[0]["mtu"], json!(1400), "tuning did not set the MTU");
    let arp_ignore = container.exec_ok(&["cat", "/proc/sys/net/ipv4/conf/eth0/arp_ignore"]);
    assert_eq!(arp_ignore.trim(), "2");

    scenario
        .cniwasm(&["check", "mixnet", &netns], &[("CNI_PATH", &cni_path)])
        .assert_success();
    scenario
        .cniwasm(&["del", "mixnet", &netns], &[("CNI_PATH", &cni_path)])
        .assert_success();
    assert_eq!(container.link_names(), vec!["lo".to_string()]);
    assert!(scenario.reservations("mixnet").is_empty());
}

#[test]
fn native_plugin_refused_by_enforcing_policy() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-mixnet.conflist", &mixed_list());
    let policy = scenario.dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"mode": "enforce"}"#).unwrap();
    let container = Netns::create("cwc");
    let links_before = scenario.host.link_names();
    let cni_path = cni_path();

    let output = scenario.cniwasm(
        &["add", "mixnet", container.path().to_str().unwrap()],
        &[
            ("CNI_PATH", &cni_path),
            ("CNIWASM_POLICY", policy.to_str().unwrap()),
        ],
    );

    assert!(!output.status.success(), "{}", output.stdout);
    let error = output.json();
    assert_eq!(error["code"], json!(106), "{error}");
    assert!(
        error["msg"]
            .as_str()
            .unwrap()
            .contains("allowNativePlugins"),
        "{error}"
    );
    assert_eq!(scenario.host.link_names(), links_before);
    assert_eq!(container.link_names(), vec!["lo".to_string()]);
    assert!(scenario.reservations("mixnet").is_empty());
}
