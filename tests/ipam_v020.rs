//! A 0.2.0 result contains one address per family (`ip4`, `ip6`), so host-local
//! rejects more range sets of a family at that version. A bridge list with
//! one IPv4 and two IPv6 range sets fails in cniwasm as in the reference
//! plugins, and cniwasm's rollback leaves nothing behind.

use cniwasm_integration_tests::reference::ReferenceRun;
use cniwasm_integration_tests::{Netns, Scenario, assert_cni_error, container_id, require_root};
use serde_json::{Value, json};

const NETWORK: &str = "v020net";

const MESSAGE: &str = "CNI version 0.2.0 does not support more than 1 address per family";

fn list(data_dir: &std::path::Path) -> Value {
    json!({
        "cniVersion": "0.2.0",
        "name": NETWORK,
        "plugins": [{"type": "bridge", "bridge": "v020br", "isGateway": true,
            "ipam": {"type": "host-local", "dataDir": data_dir,
                "ranges": [[{"subnet": "10.244.80.0/24"}],
                           [{"subnet": "fd00:80:1::/64"}],
                           [{"subnet": "fd00:80:2::/64"}]]}}]
    })
}

/// The reference reports the error with code 999, as its plugins report
/// every error they did not classify. cniwasm's host-local uses code 7
/// (invalid network configuration) for all its configuration errors. The
/// reference also keeps the bridge it created, while cniwasm's rollback
/// removes it because no other container uses it yet.
#[test]
fn two_v6_ranges_fail() {
    if !require_root() {
        return;
    }
    let ours = Scenario::new();
    ours.write_config("10-v020net.conflist", &list(&ours.ipam_dir()).to_string());
    let our_container = Netns::create("cwc");
    let our_netns = our_container.path().to_str().unwrap().to_string();
    let links_before = ours.host.link_names();

    let output = ours.cniwasm(&["add", NETWORK, &our_netns], &[]);

    let error = assert_cni_error(&output, 7, MESSAGE);
    let prefix = format!("plugin type=\"bridge\" failed (add): {MESSAGE}: ");
    let message = error["msg"].as_str().unwrap();
    assert!(message.starts_with(&prefix), "{message}");
    assert_eq!(ours.host.link_names(), links_before, "host links left");
    assert_eq!(our_container.link_names(), ["lo"], "container links left");
    assert!(ours.reservations(NETWORK).is_empty(), "addresses left");
    assert!(ours.cache_files().is_empty(), "a result was cached");

    let theirs = Scenario::new();
    let their_container = Netns::create("cwr");
    let their_netns = their_container.path().to_str().unwrap().to_string();
    let reference_list = list(&theirs.ipam_dir());
    let id = container_id(&their_netns);
    let reference = ReferenceRun::plain(&theirs.host, &reference_list, &id, &their_netns);
    let their_error = reference.add().expect_err("reference ADD succeeded");
    assert_reference_error(&their_error, "ADD");

    // DEL cannot read the configuration either, in both.
    let del = ours.cniwasm(&["del", NETWORK, &our_netns], &[]);
    assert_cni_error(&del, 7, MESSAGE);
    let their_del = reference.del(None).expect_err("reference DEL succeeded");
    assert_reference_error(&their_del, "DEL");
    assert_eq!(
        our_container.link_names(),
        their_container.link_names(),
        "container links differ after DEL"
    );
    assert!(theirs.reservations(NETWORK).is_empty());
}

/// Checks the reference bridge's error object for `command`.
fn assert_reference_error(error: &str, command: &str) {
    let prefix = format!("reference bridge {command} failed: ");
    let object = error
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("unexpected reference error: {error}"));
    let object: Value = serde_json::from_str(object.trim()).unwrap();
    assert_eq!(object, json!({"code": 999, "msg": MESSAGE}), "{command}");
}
