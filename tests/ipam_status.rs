//! STATUS through bridge to its IPAM plugin, as the reference bridge passes
//! it on, against the real kernel in throwaway namespaces.
//!
//! The reference host-local returns success for STATUS whatever its data
//! directory is. cniwasm's fails with code 50 when the directory cannot be
//! used, since ADD would fail then too.

use cniwasm_integration_tests::{CliOutput, Scenario, assert_cni_error, require_root};
use serde_json::json;

const NETWORK: &str = "statnet";

fn list(ipam_extra: serde_json::Value) -> String {
    let mut ipam = json!({"type": "host-local", "subnet": "10.244.60.0/24"});
    for (key, value) in ipam_extra.as_object().unwrap() {
        ipam[key] = value.clone();
    }
    json!({
        "cniVersion": "1.1.0",
        "name": NETWORK,
        "plugins": [{"type": "bridge", "bridge": "statbr", "ipam": ipam}]
    })
    .to_string()
}

/// Runs `cniwasm status` on the network. STATUS takes no namespace, so the
/// path names none that exists.
fn status(scenario: &Scenario, env: &[(&str, &str)]) -> CliOutput {
    scenario.cniwasm(&["status", NETWORK, "/var/run/netns/unused"], env)
}

/// Returns a path below a regular file, where no directory can be created.
fn below_a_file(scenario: &Scenario) -> std::path::PathBuf {
    let file = scenario.dir.path().join("plain-file");
    std::fs::write(&file, "not a directory").unwrap();
    file.join("ipam")
}

#[test]
fn status_ok() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-statnet.conflist", &list(json!({})));
    let links_before = scenario.host.link_names();

    status(&scenario, &[]).assert_success();

    assert!(
        scenario.ipam_dir().join(NETWORK).join("lock").is_file(),
        "host-local's STATUS ran with the network's state directory"
    );
    assert!(scenario.reservations(NETWORK).is_empty());
    assert_eq!(
        scenario.host.link_names(),
        links_before,
        "STATUS created a link"
    );
}

#[test]
fn status_env_dir_unusable() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-statnet.conflist", &list(json!({})));
    let data_dir = below_a_file(&scenario);

    let output = status(
        &scenario,
        &[("CNIWASM_IPAM_DATA_DIR", data_dir.to_str().unwrap())],
    );

    let directory = data_dir.join(NETWORK).display().to_string();
    let error = assert_cni_error(&output, 50, &directory);
    let message = error["msg"].as_str().unwrap();
    assert!(
        message.starts_with("plugin type=\"bridge\" failed (status): "),
        "{message}"
    );
    assert!(
        message.contains("IPAM plugin \"host-local\" is not available"),
        "{message}"
    );
    assert!(message.contains("Not a directory"), "{message}");
    assert!(message.contains("CNIWASM_IPAM_DATA_DIR"), "{message}");
}

#[test]
fn status_config_dir_unusable() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let data_dir = below_a_file(&scenario);
    scenario.write_config(
        "10-statnet.conflist",
        &list(json!({"dataDir": data_dir.to_str().unwrap()})),
    );

    let output = status(&scenario, &[]);

    assert_cni_error(&output, 50, &data_dir.join(NETWORK).display().to_string());
    assert!(
        !scenario.ipam_dir().join(NETWORK).exists(),
        "the default data directory was used"
    );
}

#[test]
fn status_state_withheld() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-statnet.conflist", &list(json!({})));
    let policy = scenario.dir.path().join("policy.json");
    let withheld = json!({"plugins": {"host-local": {"ipamState": false}}});
    std::fs::write(&policy, withheld.to_string()).unwrap();

    let output = status(&scenario, &[("CNIWASM_POLICY", policy.to_str().unwrap())]);

    let error = assert_cni_error(
        &output,
        50,
        "host-local cannot use its IPAM state directory",
    );
    assert!(
        error["msg"]
            .as_str()
            .unwrap()
            .contains("remove \"ipamState\": false"),
        "{error}"
    );
    assert!(!scenario.ipam_dir().join(NETWORK).exists());
}
