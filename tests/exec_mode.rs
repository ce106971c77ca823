//! `cniwasm` as a CNI plugin executable: links named after the plugin types
//! point at the binary, and a driver runs them exactly as libcni runs plugins
//! (environment, stdin, stdout, exit code). Each behaviour is compared with
//! the reference plugins given the same input.

use std::io::Write;
use std::process::{Command, Stdio};

use cniwasm_integration_tests::reference::{REFERENCE_PLUGIN_DIR, ReferenceRun};
use cniwasm_integration_tests::{
    Netns, Scenario, cniwasm_binary, plugin_dir, repo_root, require_root, shared_compile_cache,
};
use serde_json::{Map, Value, json};

/// A directory of links `bridge`, `host-local`, `portmap`, `loopback` to
/// the cniwasm binary.
fn link_dir(scenario: &Scenario) -> String {
    let dir = scenario.dir.path().join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    for plugin in ["bridge", "host-local", "portmap", "loopback"] {
        std::os::unix::fs::symlink(cniwasm_binary(), dir.join(plugin)).unwrap();
    }
    dir.display().to_string()
}

/// Runs one plugin executable with `environment` and `stdin`; returns
/// (exit success, stdout).
fn exec(program: &str, environment: &[(&str, &str)], stdin: &str) -> (bool, Value) {
    let mut child = Command::new(program)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(environment.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("failed to start {program}: {error}"));
    // A plugin that rejects its environment may exit before it reads
    // stdin, and then the write fails with a broken pipe.
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    if let Err(error) = written {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|_| json!({"raw": stdout}));
    (output.status.success(), value)
}

#[test]
fn seed_chain_through_links_matches_reference() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let links = link_dir(&scenario);
    let text = std::fs::read_to_string(repo_root().join("examples/mynet.conflist")).unwrap();
    let mut list: Value = serde_json::from_str(&text).unwrap();
    list["cniVersion"] = json!("0.4.0");
    list["plugins"][0]["ipam"]["dataDir"] = json!(scenario.ipam_dir());
    let capability_args: Map<String, Value> =
        serde_json::from_str(r#"{"portMappings":[{"hostPort":9090,"containerPort":80,"protocol":"tcp","hostIP":"127.0.0.1"}]}"#).unwrap();
    let container = Netns::create("cwc");
    let netns = container.path().display().to_string();

    let plugin_path = plugin_dir().display().to_string();
    let compile_cache = shared_compile_cache().display().to_string();
    let env = [
        ("CNIWASM_PLUGIN_PATH", plugin_path.as_str()),
        ("CNIWASM_COMPILE_CACHE", compile_cache.as_str()),
    ];
    let run = ReferenceRun {
        host: &scenario.host,
        list: &list,
        container_id: "exec-mode-test",
        netns_path: &netns,
        ifname: "eth0",
        capability_args: &capability_args,
        plugin_dir: &links,
        extra_env: &env,
    };

    let result = run.add().expect("ADD through the links");
    assert_eq!(result["cniVersion"], json!("0.4.0"));
    assert_eq!(result["ips"][0]["address"], json!("10.244.10.2/24"));
    assert_eq!(result["interfaces"][2]["sandbox"], json!(netns));
    assert!(
        scenario
            .host
            .nat_rules()
            .iter()
            .any(|rule| rule.ends_with("--to-destination 10.244.10.2:80"))
    );

    run.check(&result).expect("CHECK through the links");

    run.del(Some(&result)).expect("DEL through the links");
    assert_eq!(container.link_names(), vec!["lo".to_string()]);
    assert!(
        !scenario
            .host
            .nat_rules()
            .iter()
            .any(|rule| rule.contains("10.244.10.2"))
    );
    assert!(scenario.reservations("mynet").is_empty());
}

/// A label, the environment and the stdin of one error case.
type ErrorCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

/// The error cases of the reference skel, for cniwasm and for the reference
/// bridge plugin: both must fail with the same code.
#[test]
fn error_cases_match_reference() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let links = link_dir(&scenario);
    let ours = format!("{links}/bridge");
    let theirs = format!("{REFERENCE_PLUGIN_DIR}/bridge");
    let config = r#"{"cniVersion":"0.4.0","name":"errnet","type":"bridge","bridge":"errbr","ipam":{"type":"host-local","subnet":"10.244.50.0/24"}}"#;
    let full = [
        ("CNI_CONTAINERID", "errtest"),
        ("CNI_NETNS", "/var/run/netns/cwasm-no-such-netns"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", REFERENCE_PLUGIN_DIR),
    ];
    let with = |command: &'static str, drop: &[&str]| -> Vec<(&'static str, &'static str)> {
        let mut environment = vec![("CNI_COMMAND", command)];
        environment.extend(full.iter().filter(|(key, _)| !drop.contains(key)).copied());
        environment
    };
    let plugin_path = plugin_dir().display().to_string();

    // Without CNI_COMMAND both describe themselves on stderr and succeed.
    let (their_success, their_output) = exec(&theirs, &full, config);
    let (our_success, our_output) = exec(&ours, &full, config);
    assert!(
        their_success && our_success,
        "reference {their_output}, cniwasm {our_output}"
    );
    assert_eq!(our_output, json!({"raw": ""}), "stdout must stay empty");

    let cases: Vec<ErrorCase> = vec![
        ("unknown command", with("FROB", &[]), config),
        (
            "missing CNI_NETNS on ADD",
            with("ADD", &["CNI_NETNS"]),
            config,
        ),
        (
            "missing CNI_CONTAINERID on DEL",
            with("DEL", &["CNI_CONTAINERID"]),
            config,
        ),
        ("missing CNI_PATH", with("DEL", &["CNI_PATH"]), config),
        ("invalid JSON", with("DEL", &[]), "{\"name\": "),
        (
            "missing name",
            with("DEL", &[]),
            r#"{"cniVersion":"0.4.0","type":"bridge"}"#,
        ),
        (
            "unsupported version",
            with("DEL", &[]),
            r#"{"cniVersion":"7.0.0","name":"errnet","type":"bridge"}"#,
        ),
    ];

    for (label, environment, stdin) in cases {
        let (their_success, their_error) = exec(&theirs, &environment, stdin);
        let mut our_environment = environment.clone();
        our_environment.push(("CNIWASM_PLUGIN_PATH", plugin_path.as_str()));
        let (our_success, our_error) = exec(&ours, &our_environment, stdin);

        assert!(
            !their_success,
            "{label}: the reference succeeded: {their_error}"
        );
        assert!(!our_success, "{label}: cniwasm succeeded: {our_error}");
        assert_eq!(
            our_error["code"], their_error["code"],
            "{label}: ours {our_error} vs reference {their_error}"
        );
        assert!(
            our_error["msg"].as_str().is_some_and(|msg| !msg.is_empty()),
            "{label}: {our_error}"
        );
    }
}

#[test]
fn version_lists_plugin_versions() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let links = link_dir(&scenario);
    let plugin_path = plugin_dir().display().to_string();

    let (success, version) = exec(
        &format!("{links}/portmap"),
        &[
            ("CNI_COMMAND", "VERSION"),
            ("CNIWASM_PLUGIN_PATH", &plugin_path),
        ],
        "{\"cniVersion\":\"1.0.0\"}",
    );
    assert!(success, "{version}");
    let versions = version["supportedVersions"].as_array().unwrap();
    for expected in ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] {
        assert!(versions.contains(&json!(expected)), "{version}");
    }
    assert!(version["cniVersion"].is_string());
}

#[test]
fn install_links_plugins_and_protects_native_ones() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let plugin_dir_installed = scenario.dir.path().join("plugins");
    let bin_dir = scenario.dir.path().join("cni-bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    // A native plugin already sits where the portmap link would go.
    std::fs::copy(
        format!("{REFERENCE_PLUGIN_DIR}/portmap"),
        bin_dir.join("portmap"),
    )
    .unwrap();
    let sources: Vec<String> = ["bridge", "host-local", "portmap"]
        .iter()
        .map(|name| {
            plugin_dir()
                .join(format!("{name}.wasm"))
                .display()
                .to_string()
        })
        .collect();
    let install_args = |force: bool| {
        let mut args = vec![
            "install".to_string(),
            "--plugin-dir".to_string(),
            plugin_dir_installed.display().to_string(),
            "--bin-dir".to_string(),
            bin_dir.display().to_string(),
        ];
        if force {
            args.push("--force".to_string());
        }
        args.extend(sources.iter().cloned());
        args
    };

    let refused = scenario.cniwasm(
        &install_args(false)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    );
    assert!(
        !refused.status.success(),
        "install replaced a native plugin: {}",
        refused.stdout
    );
    assert!(
        refused.json()["msg"].as_str().unwrap().contains("--force"),
        "{}",
        refused.stdout
    );
    assert!(
        !bin_dir
            .join("portmap")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink(),
        "the native plugin was replaced"
    );

    let forced = scenario.cniwasm(
        &install_args(true)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    );
    forced.assert_success();
    for name in ["bridge", "host-local", "portmap"] {
        let link = std::fs::read_link(bin_dir.join(name))
            .unwrap_or_else(|_| panic!("{name} is not a link"));
        assert_eq!(link, cniwasm_binary());
        assert!(plugin_dir_installed.join(format!("{name}.wasm")).is_file());
    }

    let listed = scenario.cniwasm(
        &[
            "plugins",
            "--plugin-dir",
            plugin_dir_installed.to_str().unwrap(),
            "--bin-dir",
            bin_dir.to_str().unwrap(),
        ],
        &[],
    );
    listed.assert_success();
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", listed.stdout);
    assert!(
        lines.iter().all(|line| line.contains("sha256:")
            && line.contains("linked from")
            && line.ends_with("admitted")),
        "{}",
        listed.stdout
    );

    // The installed link handles VERSION as a CNI plugin.
    let (success, version) = exec(
        bin_dir.join("bridge").to_str().unwrap(),
        &[
            ("CNI_COMMAND", "VERSION"),
            (
                "CNIWASM_PLUGIN_PATH",
                plugin_dir_installed.to_str().unwrap(),
            ),
        ],
        "{}",
    );
    assert!(success, "{version}");
    assert!(
        version["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("1.0.0"))
    );
}

#[test]
fn del_with_empty_netns_releases_everything() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let links = link_dir(&scenario);
    let text = std::fs::read_to_string(repo_root().join("examples/mynet.conflist")).unwrap();
    let mut list: Value = serde_json::from_str(&text).unwrap();
    list["cniVersion"] = json!("1.0.0");
    list["plugins"][0]["ipam"]["dataDir"] = json!(scenario.ipam_dir());
    let capability_args: Map<String, Value> = serde_json::from_str(
        r#"{"portMappings":[{"hostPort":9090,"containerPort":80,"protocol":"tcp"}]}"#,
    )
    .unwrap();
    let container = Netns::create("cwc");
    let netns = container.path().display().to_string();
    let plugin_path = plugin_dir().display().to_string();
    let compile_cache = shared_compile_cache().display().to_string();
    let env = [
        ("CNIWASM_PLUGIN_PATH", plugin_path.as_str()),
        ("CNIWASM_COMPILE_CACHE", compile_cache.as_str()),
    ];
    let mut run = ReferenceRun {
        host: &scenario.host,
        list: &list,
        container_id: "empty-netns-del",
        netns_path: &netns,
        ifname: "eth0",
        capability_args: &capability_args,
        plugin_dir: &links,
        extra_env: &env,
    };
    let result = run.add().expect("ADD through the links");
    container.delete();

    // The runtime lost the namespace and passes CNI_NETNS empty, as the
    // specification allows on DEL.
    run.netns_path = "";
    run.del(Some(&result)).expect("DEL with an empty CNI_NETNS");

    assert!(
        scenario.reservations("mynet").is_empty(),
        "the address was not released"
    );
    let rules = scenario.host.nat_rules();
    assert!(
        !rules
            .iter()
            .any(|rule| rule.contains("empty-netns-del") || rule.contains("CNI-DN-")),
        "{rules:#?}"
    );
}

#[test]
fn failed_install_changes_nothing() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    let installed = scenario.dir.path().join("plugins");
    let bin_dir = scenario.dir.path().join("cni-bin");
    let good = plugin_dir().join("bridge.wasm");
    let install = |sources: &[&str]| {
        let mut args = vec![
            "install",
            "--plugin-dir",
            installed.to_str().unwrap(),
            "--bin-dir",
            bin_dir.to_str().unwrap(),
        ];
        args.extend_from_slice(sources);
        scenario.cniwasm(&args, &[])
    };
    install(&[good.to_str().unwrap()]).assert_success();
    let before = std::fs::read(installed.join("bridge.wasm")).unwrap();

    // A file that is not a component, under a name already installed and a new one.
    let garbage_dir = scenario.dir.path().join("garbage");
    std::fs::create_dir_all(&garbage_dir).unwrap();
    std::fs::write(garbage_dir.join("bridge.wasm"), b"not wasm").unwrap();
    std::fs::write(garbage_dir.join("junk.wasm"), b"not wasm either").unwrap();
    let failed = install(&[
        garbage_dir.join("junk.wasm").to_str().unwrap(),
        garbage_dir.join("bridge.wasm").to_str().unwrap(),
    ]);

    assert!(!failed.status.success());
    assert_eq!(failed.json()["code"], json!(104), "{}", failed.stdout);
    assert_eq!(
        std::fs::read(installed.join("bridge.wasm")).unwrap(),
        before,
        "the good plugin was replaced"
    );
    assert!(!installed.join("junk.wasm").exists());
    assert!(bin_dir.join("junk").symlink_metadata().is_err());

    // A link whose type has no .wasm file is "not found", not a native plugin.
    std::os::unix::fs::symlink(cniwasm_binary(), bin_dir.join("nosuch")).unwrap();
    let (success, error) = exec(
        bin_dir.join("nosuch").to_str().unwrap(),
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "x1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", bin_dir.to_str().unwrap()),
            ("CNIWASM_PLUGIN_PATH", installed.to_str().unwrap()),
        ],
        r#"{"cniVersion":"1.0.0","name":"n","type":"nosuch"}"#,
    );
    assert!(!success);
    assert_eq!(error["code"], json!(105), "{error}");
}
