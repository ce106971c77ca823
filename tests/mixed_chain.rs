//! Chains that mix wasm plugins with a native reference plugin
//! (`/usr/lib/cni/firewall`), run by the exec protocol when the policy
//! allows native plugins. `CNI_PATH` holds only the bridge and host-local
//! wasm files, so the type `firewall` resolves to the native executable.

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
            {"type": "firewall", "backend": "iptables"}
        ]
    })
    .to_string()
}

/// Links the bridge and host-local wasm plugins into `dir` and returns a
/// `CNI_PATH` of `dir` and the reference plugins.
fn cni_path(dir: &std::path::Path) -> String {
    for plugin in ["bridge.wasm", "host-local.wasm"] {
        std::os::unix::fs::symlink(plugin_dir().join(plugin), dir.join(plugin))
            .expect("linking a wasm plugin");
    }
    format!("{}:{REFERENCE_PLUGIN_DIR}", dir.display())
}

#[test]
fn native_firewall_runs_after_wasm_plugins() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-mixnet.conflist", &mixed_list());
    let container = Netns::create("cwc");
    let netns = container.path().display().to_string();
    let wasm_dir = tempfile::tempdir().expect("a temporary directory");
    let cni_path = cni_path(wasm_dir.path());

    let output = scenario.cniwasm(&["add", "mixnet", &netns], &[("CNI_PATH", &cni_path)]);
    output.assert_success();
    assert_eq!(output.json()["ips"][0]["address"], json!("10.244.60.2/24"));

    // The native firewall plugin accepted the container's traffic in its chain.
    let filter = scenario.host.exec_ok(&["iptables-save", "-t", "filter"]);
    assert!(
        filter.contains("-A CNI-FORWARD") && filter.contains("10.244.60.2/32"),
        "{filter}"
    );

    scenario
        .cniwasm(&["check", "mixnet", &netns], &[("CNI_PATH", &cni_path)])
        .assert_success();
    scenario
        .cniwasm(&["del", "mixnet", &netns], &[("CNI_PATH", &cni_path)])
        .assert_success();
    assert_eq!(container.link_names(), vec!["lo".to_string()]);
    assert!(scenario.reservations("mixnet").is_empty());
    let filter = scenario.host.exec_ok(&["iptables-save", "-t", "filter"]);
    assert!(
        !filter.contains("10.244.60.2/32"),
        "the firewall DEL did not run: {filter}"
    );
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
    let wasm_dir = tempfile::tempdir().expect("a temporary directory");
    let cni_path = cni_path(wasm_dir.path());

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
