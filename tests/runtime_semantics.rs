//! Runtime behaviour around the plugins, compared with libcni's. The tests
//! cover the result cache (its content, a failed write, a damaged or older
//! entry), CHECK and DEL with the cached result, GC with an empty valid list,
//! STATUS errors and `cniwasm validate`. Each test runs in throwaway
//! namespaces against the real kernel.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use cniwasm_integration_tests::{
    CliOutput, Netns, Scenario, assert_cni_error, container_id, plugin_dir, repo_root, require_root,
};
use serde_json::{Value, json};

const NETWORK: &str = "semnet";

const CAP_ARGS: &str =
    r#"{"portMappings":[{"hostPort":9393,"containerPort":80,"protocol":"tcp"}]}"#;

/// bridge (with host-local) and portmap, then `extra` plugins, at `version`;
/// `None` leaves `cniVersion` out.
fn list(version: Option<&str>, extra: &[Value]) -> Value {
    let mut plugins = vec![
        json!({"type": "bridge", "bridge": "sembr", "isGateway": true, "ipMasq": true,
               "ipam": {"type": "host-local", "subnet": "10.244.60.0/24",
                        "routes": [{"dst": "0.0.0.0/0"}]}}),
        json!({"type": "portmap", "capabilities": {"portMappings": true}}),
    ];
    plugins.extend_from_slice(extra);
    let mut list = json!({"name": NETWORK, "plugins": plugins});
    if let Some(version) = version {
        list["cniVersion"] = json!(version);
    }
    list
}

/// One scenario with one container, the test plugins on `CNI_PATH`, and a
/// policy whose only setting is an audit log, so tests can see which
/// plugins ran.
struct World {
    scenario: Scenario,
    container: Netns,
    netns: String,
    cni_path: String,
    policy: PathBuf,
}

impl World {
    fn new(list: &Value) -> Self {
        let scenario = Scenario::new();
        let container = Netns::create("cwc");
        let netns = container.path().display().to_string();
        let cni_path = format!(
            "{}:{}",
            plugin_dir().display(),
            repo_root().join("plugins-wasm/out-test").display()
        );
        let policy = scenario.dir.path().join("policy.json");
        let audit_log = scenario.dir.path().join("audit.log");
        std::fs::write(&policy, json!({"auditLog": audit_log}).to_string()).unwrap();

        let world = Self {
            scenario,
            container,
            netns,
            cni_path,
            policy,
        };
        world.write(list);
        world
    }

    /// Writes (or rewrites) the network's configuration list.
    fn write(&self, list: &Value) {
        self.scenario.write_config(
            "10-semnet.conflist",
            &serde_json::to_string_pretty(list).unwrap(),
        );
    }

    fn conflist_bytes(&self) -> Vec<u8> {
        std::fs::read(self.scenario.netconf_dir().join("10-semnet.conflist")).unwrap()
    }

    /// Runs `cniwasm COMMAND semnet NETNS` with the test plugins, the policy
    /// and the extra environment `env`.
    fn run(&self, command: &str, env: &[(&str, &str)]) -> CliOutput {
        self.run_args(&[command, NETWORK, &self.netns], env)
    }

    fn run_args(&self, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        let policy = self.policy.display().to_string();
        let mut full = vec![
            ("CNI_PATH", self.cni_path.as_str()),
            ("CNIWASM_POLICY", policy.as_str()),
        ];
        full.extend_from_slice(env);
        self.scenario.cniwasm(args, &full)
    }

    /// Runs ADD with the port mapping and returns the printed result.
    fn add(&self) -> Value {
        let output = self.run("add", &[("CAP_ARGS", CAP_ARGS)]);
        output.assert_success();
        output.json()
    }

    /// Returns the path of the attachment's cache file.
    fn cache_file(&self) -> PathBuf {
        let name = format!("{NETWORK}-{}-eth0", container_id(&self.netns));
        self.scenario.cache_dir().join("results").join(name)
    }

    /// Removes every address of eth0 in the container, which CHECK must notice.
    fn damage_address(&self) {
        self.container
            .exec_ok(&["ip", "addr", "flush", "dev", "eth0"]);
    }

    /// Lists every plugin-call record in the audit log as `COMMAND plugin`,
    /// such as `ADD bridge`.
    fn plugin_calls(&self) -> Vec<String> {
        let text =
            std::fs::read_to_string(self.scenario.dir.path().join("audit.log")).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("audit lines are JSON"))
            .filter(|record| record["kind"] == "plugin-call")
            .map(|record| {
                let field = |key: &str| record[key].as_str().unwrap_or_default().to_string();
                format!("{} {}", field("command"), field("plugin"))
            })
            .collect()
    }

    /// Asserts the attachment is gone: no container link but lo, no
    /// reservation, no cache file, no NAT rule for the network's addresses.
    fn assert_detached(&self) {
        assert_eq!(self.container.link_names(), vec!["lo".to_string()]);
        assert!(
            self.scenario.reservations(NETWORK).is_empty(),
            "reservations left: {:?}",
            self.scenario.reservations(NETWORK)
        );
        assert!(
            self.scenario.cache_files().is_empty(),
            "cache files left: {:?}",
            self.scenario.cache_files()
        );
        let rules = self.scenario.host.nat_rules();
        assert!(
            !rules
                .iter()
                .any(|rule| rule.contains("10.244.60.") || rule.contains("CNI-DN-")),
            "NAT rules left: {rules:#?}"
        );
    }
}

/// Parses the JSON report a probe plugin puts at the end of its message.
fn probe_report(error: &Value) -> Value {
    let message = error["msg"].as_str().unwrap();
    let start = message
        .find('{')
        .unwrap_or_else(|| panic!("missing probe report in {message:?}"));
    serde_json::from_str(&message[start..])
        .unwrap_or_else(|e| panic!("invalid report ({e}) in {message:?}"))
}

#[test]
fn cache_write_failure_rolls_back() {
    if !require_root() {
        return;
    }
    let world = World::new(&list(Some("0.4.0"), &[]));
    let blocker = world.scenario.dir.path().join("not-a-dir");
    std::fs::write(&blocker, "a regular file").unwrap();
    let cache_dir = blocker.join("cache");
    let host_links = world.scenario.host.link_names();
    let nat_before = world.scenario.host.nat_rules();

    let output = world.run(
        "add",
        &[
            ("CAP_ARGS", CAP_ARGS),
            ("CNIWASM_CACHE_DIR", cache_dir.to_str().unwrap()),
        ],
    );

    assert_cni_error(&output, 5, &cache_dir.display().to_string());
    assert!(
        output.stdout.contains("CNIWASM_CACHE_DIR"),
        "{}",
        output.stdout
    );
    // The rollback also removes the bridge the failed ADD created, because no
    // container uses it. Only portmap's shared chains stay, as after any DEL.
    assert_eq!(world.scenario.host.link_names(), host_links);
    let new_rules: Vec<String> = world
        .scenario
        .host
        .nat_rules()
        .into_iter()
        .filter(|rule| !nat_before.contains(rule))
        .collect();
    assert!(
        new_rules.iter().all(|rule| rule.contains("CNI-HOSTPORT-")),
        "NAT rules left: {new_rules:#?}"
    );
    world.assert_detached();
    assert_eq!(std::fs::read_to_string(&blocker).unwrap(), "a regular file");

    // The whole chain ran ADD before the write failed, then the rollback
    // ran DEL.
    let calls = world.plugin_calls();
    assert!(calls.contains(&"ADD portmap".to_string()), "{calls:?}");
    assert!(calls.contains(&"DEL bridge".to_string()), "{calls:?}");
}

#[test]
fn disable_check_skips_plugins() {
    if !require_root() {
        return;
    }
    let mut disabled = list(Some("0.4.0"), &[]);
    disabled["disableCheck"] = json!(true);
    let world = World::new(&disabled);
    world.add();
    world.damage_address();

    world.run("check", &[]).assert_success();
    let calls = world.plugin_calls();
    assert!(
        !calls.iter().any(|call| call.starts_with("CHECK ")),
        "a plugin ran CHECK: {calls:?}"
    );

    // The same damage fails CHECK once it is enabled again.
    world.write(&list(Some("0.4.0"), &[]));
    let output = world.run("check", &[]);
    assert!(!output.status.success(), "CHECK missed the lost address");
    world.run("del", &[]).assert_success();
    world.assert_detached();
}

#[test]
fn invalid_cache_fails_check() {
    if !require_root() {
        return;
    }
    let world = World::new(&list(Some("0.4.0"), &[]));
    world.add();
    std::fs::write(world.cache_file(), "{").unwrap();

    let output = world.run("check", &[]);

    assert_cni_error(&output, 6, &world.cache_file().display().to_string());
    // DEL tolerates the damaged cache. The port mapping comes with the DEL,
    // because the cache cannot supply it.
    world.run("del", &[("CAP_ARGS", CAP_ARGS)]).assert_success();
    world.assert_detached();
}

/// A plugin that sleeps, as the bridge does while its port comes up, wakes
/// up and finishes: WASI's timers need a runtime that drives them.
#[test]
fn plugin_sleep_wakes_up() {
    if !require_root() {
        return;
    }
    let world = World::new(&list(
        Some("1.0.0"),
        &[json!({"type": "probe", "sleepMs": 100})],
    ));

    let output = world.run("add", &[]);

    output.assert_success();
    assert_eq!(output.json()["ips"][0]["address"], json!("10.244.60.2/24"));
}

#[test]
fn older_cached_result_converted() {
    if !require_root() {
        return;
    }
    let world = World::new(&list(Some("0.4.0"), &[json!({"type": "probe"})]));
    let result = world.add();
    assert_eq!(result["ips"][0]["version"], json!("4"));

    // probe reports the prevResult CHECK gives it: the result in 1.0.0
    // form, which has no ips[].version.
    world.write(&list(
        Some("1.0.0"),
        &[json!({"type": "probe", "reportCheck": true})],
    ));
    let error = assert_cni_error(&world.run("check", &[]), 195, "probe");
    let mut expected = result.clone();
    expected["cniVersion"] = json!("1.0.0");
    expected["ips"][0]
        .as_object_mut()
        .unwrap()
        .remove("version");
    assert_eq!(probe_report(&error)["prevResult"], expected);

    world.write(&list(Some("1.0.0"), &[json!({"type": "probe"})]));
    world.run("check", &[]).assert_success();

    // CHECK leaves the cache as ADD wrote it, and the plugins read the
    // kernel: damage makes the same CHECK fail.
    assert_eq!(read_cache(&world.cache_file())["result"], result);
    world.damage_address();
    assert!(!world.run("check", &[]).status.success());
    world.run("del", &[]).assert_success();
    world.assert_detached();
}

#[test]
fn del_prev_result_by_version() {
    if !require_root() {
        return;
    }
    for version in ["0.3.1", "0.4.0"] {
        let reporting = list(
            Some(version),
            &[json!({"type": "probe", "reportDel": true})],
        );
        let world = World::new(&reporting);
        let result = world.add();

        let output = world.run("del", &[]);

        let error = assert_cni_error(&output, 195, "probe");
        let expected = match version {
            "0.3.1" => Value::Null,
            _ => result,
        };
        assert_eq!(probe_report(&error)["prevResult"], expected, "{version}");
        assert!(world.cache_file().is_file(), "{version}: cache removed");

        world.write(&list(Some(version), &[json!({"type": "probe"})]));
        world.run("del", &[]).assert_success();
        world.assert_detached();
    }
}

#[test]
fn gc_empty_list_deletes_first() {
    if !require_root() {
        return;
    }
    let world = World::new(&list(Some("1.1.0"), &[json!({"type": "gc-probe"})]));
    world.add();
    let attachment = json!([{"containerID": container_id(&world.netns), "ifname": "eth0"}]);

    // With the attachment valid, only plugin GC runs (gc-probe fails on
    // purpose with what it received).
    let valid = format!("{}/eth0", container_id(&world.netns));
    let kept = world.run_args(&["gc", NETWORK, "--valid", &valid], &[]);
    let report = probe_report(&assert_cni_error(&kept, 196, "gc-probe"));
    assert_eq!(report["cni.dev/valid-attachments"], attachment);
    assert!(world.container.link_names().contains(&"eth0".to_string()));

    // Without it the attachment is deleted, then plugin GC gets empty lists.
    let emptied = world.run_args(&["gc", NETWORK], &[]);
    let report = probe_report(&assert_cni_error(&emptied, 196, "gc-probe"));
    assert_eq!(report["cni.dev/valid-attachments"], json!([]));
    assert_eq!(report["cni.dev/attachments"], json!([]));
    world.assert_detached();

    // ADD in order, plugin GC, then DEL in reverse before plugin GC. A
    // delegated host-local call ends, and is recorded, before its bridge's.
    let gc = ["GC bridge", "GC portmap", "GC gc-probe"];
    let expected = [
        &[
            "ADD host-local",
            "ADD bridge",
            "ADD portmap",
            "ADD gc-probe",
        ][..],
        &gc,
        &[
            "DEL gc-probe",
            "DEL portmap",
            "DEL host-local",
            "DEL bridge",
        ],
        &gc,
    ]
    .concat();
    assert_eq!(world.plugin_calls(), expected);
}

#[test]
fn status_error_stops_chain() {
    if !require_root() {
        return;
    }
    let failing = json!({"type": "probe", "statusError":
        {"code": 50, "msg": "probe backend not ready", "details": "no route to the backend"}});
    let world = World::new(&list(
        Some("1.1.0"),
        &[failing.clone(), json!({"type": "loopback"})],
    ));

    let output = world.run("status", &[]);

    let error = assert_cni_error(&output, 50, "probe backend not ready");
    assert_eq!(error["details"], json!("no route to the backend"));
    // STATUS ran in order and stopped at the failing plugin. bridge passes
    // STATUS on to host-local, whose call ends, and is recorded, first.
    let status_calls: Vec<String> = world
        .plugin_calls()
        .into_iter()
        .filter(|call| call.starts_with("STATUS "))
        .collect();
    assert_eq!(
        status_calls,
        [
            "STATUS host-local",
            "STATUS bridge",
            "STATUS portmap",
            "STATUS probe"
        ]
    );
}

#[test]
fn status_skipped_before_1_1_0() {
    if !require_root() {
        return;
    }
    let failing = json!({"type": "probe", "statusError": {"code": 50, "msg": "not ready"}});
    let world = World::new(&list(Some("1.0.0"), &[failing]));

    // As libcni, a list without STATUS reports ready and runs no plugin.
    world.run("status", &[]).assert_success();

    assert_eq!(world.plugin_calls(), Vec::<String>::new());
}

#[test]
fn validate_unions_capabilities() {
    if !require_root() {
        return;
    }
    let mut capable = list(
        Some("1.0.0"),
        &[json!({"type": "probe", "capabilities": {"portMappings": true, "bandwidth": true}})],
    );
    capable["plugins"][0]["capabilities"] = json!({"mac": true, "ips": false});
    let world = World::new(&capable);

    let output = world.run_args(&["validate", NETWORK], &[]);

    output.assert_success();
    assert_eq!(
        output.stdout.trim(),
        "valid; capabilities: bandwidth, mac, portMappings"
    );
}

#[test]
fn validate_names_unsupported_version() {
    if !require_root() {
        return;
    }
    let world = World::new(&list(Some("0.3.0"), &[json!({"type": "probe"})]));

    let output = world.run_args(&["validate", NETWORK], &[]);

    assert_cni_error(
        &output,
        7,
        "1 problem(s): plugin 2 (probe) does not support config version \"0.3.0\"; it supports 0.3.1, 0.4.0, 1.0.0, 1.1.0",
    );
}

#[test]
fn validate_without_version_uses_0_1_0() {
    if !require_root() {
        return;
    }
    let world = World::new(&list(None, &[]));
    let valid = world.run_args(&["validate", NETWORK], &[]);
    valid.assert_success();
    assert_eq!(valid.stdout.trim(), "valid; capabilities: portMappings");

    // probe lacks 0.1.0, so the problem names the version assumed.
    world.write(&list(None, &[json!({"type": "probe"})]));
    let output = world.run_args(&["validate", NETWORK], &[]);

    assert_cni_error(&output, 7, "does not support config version \"0.1.0\"");
}

#[test]
fn cache_file_matches_add() {
    if !require_root() {
        return;
    }
    let world = World::new(&list(Some("1.0.0"), &[]));
    let cni_args = "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.244.60.7";
    // bandwidth is declared by no plugin, yet the cache keeps every argument.
    let cap_args = r#"{"portMappings":[{"hostPort":9393,"containerPort":80,"protocol":"tcp"}],"bandwidth":{"ingressRate":1000}}"#;

    let output = world.run("add", &[("CNI_ARGS", cni_args), ("CAP_ARGS", cap_args)]);

    output.assert_success();
    let cached = read_cache(&world.cache_file());
    assert_eq!(cached["kind"], json!("cniCacheV1"));
    assert_eq!(cached["containerId"], json!(container_id(&world.netns)));
    assert_eq!(cached["ifName"], json!("eth0"));
    assert_eq!(cached["networkName"], json!(NETWORK));
    assert_eq!(cached["netns"], json!(world.netns));
    assert_eq!(cached["result"], output.json());
    assert_eq!(
        cached["result"]["ips"][0]["address"],
        json!("10.244.60.7/24")
    );
    let config = base64::engine::general_purpose::STANDARD
        .decode(cached["config"].as_str().unwrap())
        .unwrap();
    assert_eq!(config, world.conflist_bytes());
    assert_eq!(
        cached["cniArgs"],
        json!([
            ["IgnoreUnknown", "1"],
            ["K8S_POD_NAME", "web"],
            ["IP", "10.244.60.7"]
        ])
    );
    assert_eq!(
        cached["capabilityArgs"],
        serde_json::from_str::<Value>(cap_args).unwrap()
    );

    // DEL with no arguments takes them from the cache: the port mapping's
    // rule and the requested address both go.
    world.run("del", &[]).assert_success();
    world.assert_detached();
}

fn read_cache(path: &Path) -> Value {
    let bytes = std::fs::read(path)
        .unwrap_or_else(|e| panic!("missing cache file {}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("the cache file is JSON")
}
