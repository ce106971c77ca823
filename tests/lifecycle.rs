//! GC, STATUS, version negotiation and DEL with a damaged or missing cache,
//! against the real kernel in throwaway namespaces.

use cniwasm_integration_tests::{Netns, Scenario, container_id, require_root};
use serde_json::json;

fn list(version: &str, extra: serde_json::Value) -> String {
    let mut list = json!({
        "cniVersion": version,
        "name": "lifenet",
        "plugins": [
            {"type": "bridge", "bridge": "lifebr", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "subnet": "10.244.40.0/24", "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    for (key, value) in extra.as_object().unwrap() {
        list[key] = value.clone();
    }
    list.to_string()
}

const CAP_ARGS: &str =
    r#"{"portMappings":[{"hostPort":9191,"containerPort":80,"protocol":"tcp"}]}"#;

fn add(scenario: &Scenario, container: &Netns) -> serde_json::Value {
    let output = scenario.cniwasm(
        &["add", "lifenet", container.path().to_str().unwrap()],
        &[("CAP_ARGS", CAP_ARGS)],
    );
    output.assert_success();
    output.json()
}

#[test]
fn gc_deletes_every_cached_attachment() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-lifenet.conflist", &list("1.1.0", json!({})));
    let containers = [Netns::create("cwc"), Netns::create("cwc")];
    let links_before = scenario.host.link_names();
    for container in &containers {
        add(&scenario, container);
    }
    assert_eq!(scenario.reservations("lifenet").len(), 2);
    assert_eq!(scenario.cache_files().len(), 2);

    scenario
        .cniwasm(
            &["gc", "lifenet", containers[0].path().to_str().unwrap()],
            &[],
        )
        .assert_success();

    assert!(scenario.reservations("lifenet").is_empty());
    assert!(scenario.cache_files().is_empty());
    assert_eq!(
        scenario.host.link_names().len(),
        links_before.len() + 1,
        "only the bridge stays"
    );
    for container in &containers {
        assert_eq!(container.link_names(), vec!["lo".to_string()]);
    }
    assert!(
        !scenario
            .host
            .nat_rules()
            .iter()
            .any(|rule| rule.contains("10.244.40."))
    );
}

#[test]
fn gc_disabled_keeps_attachments() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config(
        "10-lifenet.conflist",
        &list("1.1.0", json!({"disableGC": true})),
    );
    let container = Netns::create("cwc");
    add(&scenario, &container);

    scenario
        .cniwasm(&["gc", "lifenet", container.path().to_str().unwrap()], &[])
        .assert_success();

    assert_eq!(scenario.reservations("lifenet").len(), 1);
    assert_eq!(scenario.cache_files().len(), 1);
    scenario
        .cniwasm(&["del", "lifenet", container.path().to_str().unwrap()], &[])
        .assert_success();
}

#[test]
fn status_succeeds_for_1_1_0() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-lifenet.conflist", &list("1.1.0", json!({})));
    let container = Netns::create("cwc");
    scenario
        .cniwasm(
            &["status", "lifenet", container.path().to_str().unwrap()],
            &[],
        )
        .assert_success();
}

#[test]
fn cni_versions_pick_highest() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config(
        "10-lifenet.conflist",
        &list("0.3.0", json!({"cniVersions": ["1.0.0", "1.1.0", "2.0.0"]})),
    );
    let container = Netns::create("cwc");

    let result = add(&scenario, &container);

    assert_eq!(result["cniVersion"], json!("1.1.0"));
    assert_eq!(
        result["ips"][0].get("version"),
        None,
        "1.x results have no ips[].version"
    );
    scenario
        .cniwasm(&["del", "lifenet", container.path().to_str().unwrap()], &[])
        .assert_success();
}

/// Replaces the single cache file with `content`, or removes it for `None`.
fn damage_cache(scenario: &Scenario, content: Option<&str>) {
    let files = scenario.cache_files();
    assert_eq!(files.len(), 1);
    let path = scenario.cache_dir().join("results").join(&files[0]);
    match content {
        Some(text) => std::fs::write(&path, text).unwrap(),
        None => std::fs::remove_file(&path).unwrap(),
    }
}

#[test]
fn del_cleans_up_with_damaged_or_missing_cache() {
    if !require_root() {
        return;
    }
    for (label, content) in [
        ("empty", Some("")),
        ("truncated", Some("{\"kind\":\"cniCacheV1\",\"contai")),
        ("missing", None),
    ] {
        let scenario = Scenario::new();
        scenario.write_config("10-lifenet.conflist", &list("0.4.0", json!({})));
        let container = Netns::create("cwc");
        let links_before = scenario.host.link_names();
        add(&scenario, &container);
        damage_cache(&scenario, content);

        // The capability arguments come with the DEL, as the cache cannot supply them.
        scenario
            .cniwasm(
                &["del", "lifenet", container.path().to_str().unwrap()],
                &[("CAP_ARGS", CAP_ARGS)],
            )
            .assert_success();

        assert!(
            scenario.reservations("lifenet").is_empty(),
            "{label}: reservation left"
        );
        assert!(
            scenario.cache_files().is_empty(),
            "{label}: cache file left"
        );
        assert_eq!(
            container.link_names(),
            vec!["lo".to_string()],
            "{label}: container link left"
        );
        assert_eq!(
            scenario.host.link_names().len(),
            links_before.len() + 1,
            "{label}: host links left"
        );
        let rules = scenario.host.nat_rules();
        assert!(
            !rules
                .iter()
                .any(|rule| rule.contains("10.244.40.") || rule.contains("CNI-DN-")),
            "{label}: {rules:#?}"
        );
    }
}

#[test]
fn validate_lists_every_problem() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-lifenet.conflist", &list("1.0.0", json!({})));

    let valid = scenario.cniwasm(&["validate", "lifenet"], &[]);
    valid.assert_success();
    assert!(
        valid.stdout.contains("capabilities: portMappings"),
        "{}",
        valid.stdout
    );

    let broken = list("1.0.0", json!({}))
        .replace("\"portmap\"", "\"nosuchplugin\"")
        .replace("\"bridge\",", "\"nosuchbridge\",");
    scenario.write_config("10-lifenet.conflist", &broken);
    let output = scenario.cniwasm(&["validate", "lifenet"], &[]);
    assert!(!output.status.success());
    let message = output.json()["msg"].as_str().unwrap().to_string();
    assert!(message.starts_with("2 problem(s)"), "{message}");
    assert!(
        message.contains("nosuchplugin") && message.contains("nosuchbridge"),
        "{message}"
    );
}

/// bridge, portmap, a plugin whose DEL fails while `failDel` is set, loopback.
fn four_plugin_list(fail_del: bool) -> String {
    json!({
        "cniVersion": "0.4.0",
        "name": "lifenet",
        "plugins": [
            {"type": "bridge", "bridge": "lifebr", "isGateway": true, "ipMasq": true,
             "ipam": {"type": "host-local", "subnet": "10.244.40.0/24", "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "fail-del", "failDel": fail_del},
            {"type": "loopback"}
        ]
    })
    .to_string()
}

#[test]
fn del_goes_past_failing_plugin_and_keeps_cache() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-lifenet.conflist", &four_plugin_list(true));
    let container = Netns::create("cwc");
    let netns = container.path().display().to_string();
    let cni_path = format!(
        "{}:{}",
        cniwasm_integration_tests::plugin_dir().display(),
        cniwasm_integration_tests::repo_root()
            .join("plugins-wasm/out-test")
            .display()
    );
    let env = [("CNI_PATH", cni_path.as_str()), ("CAP_ARGS", CAP_ARGS)];
    scenario
        .cniwasm(&["add", "lifenet", &netns], &env)
        .assert_success();

    let failed = scenario.cniwasm(&["del", "lifenet", &netns], &env);

    assert!(!failed.status.success());
    let error = failed.json();
    assert_eq!(error["code"], json!(197), "{error}");
    assert!(
        error["msg"].as_str().unwrap().contains("fail-del"),
        "{error}"
    );
    // The other three ran their DEL: loopback set lo down, portmap removed its
    // rules, bridge removed the interface and released the address.
    let lo = container.ip_json(&["link", "show", "lo"]);
    assert!(
        !lo[0]["flags"].as_array().unwrap().contains(&json!("UP")),
        "loopback DEL did not run: {lo}"
    );
    assert!(
        !scenario
            .host
            .nat_rules()
            .iter()
            .any(|rule| rule.contains("CNI-DN-")),
        "portmap DEL did not run"
    );
    assert!(
        !container.link_names().contains(&"eth0".to_string()),
        "bridge DEL did not run"
    );
    assert!(scenario.reservations("lifenet").is_empty());
    assert_eq!(
        scenario.cache_files().len(),
        1,
        "the cache must stay so DEL can be retried"
    );

    // Fixing the cause lets a second DEL succeed and remove the cache.
    scenario.write_config("10-lifenet.conflist", &four_plugin_list(false));
    scenario
        .cniwasm(&["del", "lifenet", &netns], &env)
        .assert_success();
    assert!(scenario.cache_files().is_empty());
}

#[test]
fn gc_keeps_valid_attachments() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-lifenet.conflist", &list("1.1.0", json!({})));
    let kept = Netns::create("cwc");
    let stale = Netns::create("cwc");
    let kept_result = add(&scenario, &kept);
    add(&scenario, &stale);
    let kept_id = container_id(kept.path().to_str().unwrap());

    let valid = format!("{kept_id}/eth0");
    scenario
        .cniwasm(&["gc", "lifenet", "--valid", &valid], &[])
        .assert_success();

    // The stale attachment is gone: link, address, rules, cache file.
    assert_eq!(stale.link_names(), vec!["lo".to_string()]);
    assert_eq!(
        scenario.reservations("lifenet"),
        vec!["10.244.40.2".to_string()]
    );
    assert_eq!(
        scenario.cache_files(),
        vec![format!("lifenet-{kept_id}-eth0")]
    );
    let rules = scenario.host.nat_rules();
    assert!(
        !rules.iter().any(|rule| rule.contains("10.244.40.3")),
        "{rules:#?}"
    );
    // The valid one is untouched.
    assert!(kept.link_names().contains(&"eth0".to_string()));
    assert_eq!(kept_result["ips"][0]["address"], json!("10.244.40.2/24"));
    assert!(
        rules.iter().any(|rule| rule.contains("10.244.40.2")),
        "{rules:#?}"
    );

    let bad = scenario.cniwasm(&["gc", "lifenet", "--valid", "no-slash"], &[]);
    assert!(!bad.status.success());
    assert_eq!(bad.json()["code"], json!(4));

    scenario
        .cniwasm(&["del", "lifenet", kept.path().to_str().unwrap()], &[])
        .assert_success();
}

#[test]
fn requested_ip_honoured() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-lifenet.conflist", &list("1.0.0", json!({})));
    let container = Netns::create("cwc");

    let output = scenario.cniwasm(
        &["add", "lifenet", container.path().to_str().unwrap()],
        &[("CNI_ARGS", "IgnoreUnknown=1;IP=10.244.40.50")],
    );

    output.assert_success();
    assert_eq!(output.json()["ips"][0]["address"], json!("10.244.40.50/24"));
    assert_eq!(
        scenario.reservations("lifenet"),
        vec!["10.244.40.50".to_string()]
    );
    scenario
        .cniwasm(&["del", "lifenet", container.path().to_str().unwrap()], &[])
        .assert_success();
    assert!(scenario.reservations("lifenet").is_empty());
}

#[test]
fn ip_ranges_capability_honoured() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let ranged = json!({
        "cniVersion": "1.0.0",
        "name": "rangenet",
        "plugins": [{"type": "bridge", "bridge": "rangebr", "isGateway": true,
                     "capabilities": {"ipRanges": true}, "ipam": {"type": "host-local"}}]
    });
    scenario.write_config("10-rangenet.conflist", &ranged.to_string());
    let container = Netns::create("cwc");
    let ranges = r#"{"ipRanges":[[{"subnet":"10.244.41.0/24","rangeStart":"10.244.41.100","rangeEnd":"10.244.41.110"}]]}"#;

    let output = scenario.cniwasm(
        &["add", "rangenet", container.path().to_str().unwrap()],
        &[("CAP_ARGS", ranges)],
    );

    output.assert_success();
    assert_eq!(
        output.json()["ips"][0]["address"],
        json!("10.244.41.100/24")
    );
    scenario
        .cniwasm(
            &["del", "rangenet", container.path().to_str().unwrap()],
            &[("CAP_ARGS", ranges)],
        )
        .assert_success();
    assert!(scenario.reservations("rangenet").is_empty());
}

#[test]
fn plugin_gc_receives_both_attachment_keys() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let mut probed: serde_json::Value = serde_json::from_str(&list("1.1.0", json!({}))).unwrap();
    probed["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "gc-probe"}));
    scenario.write_config("10-lifenet.conflist", &probed.to_string());
    let cni_path = format!(
        "{}:{}",
        cniwasm_integration_tests::plugin_dir().display(),
        cniwasm_integration_tests::repo_root()
            .join("plugins-wasm/out-test")
            .display()
    );
    let container = Netns::create("cwc");
    let netns = container.path().display().to_string();
    scenario
        .cniwasm(&["add", "lifenet", &netns], &[("CNI_PATH", &cni_path)])
        .assert_success();
    let valid = format!("{}/eth0", container_id(&netns));

    let output = scenario.cniwasm(
        &["gc", "lifenet", "--valid", &valid],
        &[("CNI_PATH", &cni_path)],
    );

    // gc-probe fails on purpose and reports what it received.
    assert!(!output.status.success());
    let error = output.json();
    assert_eq!(error["code"], json!(196), "{error}");
    let message = error["msg"].as_str().unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&message[message.find('{').unwrap()..]).unwrap();
    let expected = json!([{"containerID": container_id(&netns), "ifname": "eth0"}]);
    assert_eq!(report["cni.dev/valid-attachments"], expected);
    assert_eq!(report["cni.dev/attachments"], expected);
    // The valid attachment survived the GC.
    assert!(container.link_names().contains(&"eth0".to_string()));

    scenario
        .cniwasm(&["del", "lifenet", &netns], &[("CNI_PATH", &cni_path)])
        .assert_success();
}

#[test]
fn del_runs_available_plugins_when_one_is_missing() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-lifenet.conflist", &list("0.4.0", json!({})));
    let container = Netns::create("cwc");
    let netns = container.path().display().to_string();
    add(&scenario, &container);

    // portmap disappears from the plugin path before DEL.
    let partial = scenario.dir.path().join("partial");
    std::fs::create_dir_all(&partial).unwrap();
    for plugin in ["bridge", "host-local"] {
        let source = cniwasm_integration_tests::plugin_dir().join(format!("{plugin}.wasm"));
        std::fs::copy(source, partial.join(format!("{plugin}.wasm"))).unwrap();
    }
    let output = scenario.cniwasm(
        &["del", "lifenet", &netns],
        &[("CNI_PATH", partial.to_str().unwrap())],
    );

    assert!(!output.status.success());
    assert_eq!(output.json()["code"], json!(105), "{}", output.stdout);
    assert_eq!(
        container.link_names(),
        vec!["lo".to_string()],
        "bridge DEL did not run"
    );
    assert!(
        scenario.reservations("lifenet").is_empty(),
        "the address was not released"
    );
    assert_eq!(
        scenario.cache_files().len(),
        1,
        "the cache must stay for a retry"
    );

    scenario
        .cniwasm(&["del", "lifenet", &netns], &[("CAP_ARGS", CAP_ARGS)])
        .assert_success();
    assert!(scenario.cache_files().is_empty());
    assert!(
        !scenario
            .host
            .nat_rules()
            .iter()
            .any(|rule| rule.contains("CNI-DN-"))
    );
}

#[test]
fn validate_checks_ipam_and_policy() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-lifenet.conflist", &list("1.0.0", json!({})));
    let partial = scenario.dir.path().join("partial");
    std::fs::create_dir_all(&partial).unwrap();
    for plugin in ["bridge", "portmap"] {
        let source = cniwasm_integration_tests::plugin_dir().join(format!("{plugin}.wasm"));
        std::fs::copy(source, partial.join(format!("{plugin}.wasm"))).unwrap();
    }
    let policy = scenario.dir.path().join("policy.json");
    std::fs::write(
        &policy,
        json!({"plugins": {"portmap": {"imports": ["log"]}}}).to_string(),
    )
    .unwrap();

    let output = scenario.cniwasm(
        &["validate", "lifenet"],
        &[
            ("CNI_PATH", partial.to_str().unwrap()),
            ("CNIWASM_POLICY", policy.to_str().unwrap()),
        ],
    );

    assert!(!output.status.success(), "{}", output.stdout);
    let message = output.json()["msg"].as_str().unwrap().to_string();
    assert!(message.starts_with("2 problem(s)"), "{message}");
    assert!(message.contains("IPAM host-local"), "{message}");
    assert!(
        message.contains("portmap") && message.contains("imports"),
        "{message}"
    );
}
