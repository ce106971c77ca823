//! Debian's podman (4.3, CNI network backend) running a container on a
//! network whose conflist names bridge, host-local and portmap, each a link
//! to the cniwasm binary. podman drives the plugins through libcni, so this
//! is cniwasm's exec-protocol mode under a real container runtime.
//!
//! podman creates the bridge, the veth pair and the NAT rules in the
//! machine's own network namespace. So the test uses a network, bridge and
//! subnet of its own and keeps all podman state in a temporary directory.
//! A guard removes what is left, also when the test fails.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cniwasm_integration_tests::{
    cniwasm_binary, plugin_dir, repo_root, require_root, run, run_ok, unique_name,
};
use serde_json::{Value, json};

/// Subnet of the test network, which no other test uses.
const SUBNET: &str = "10.244.70.0/24";

/// Where libcni, as podman 4.3 uses it, caches ADD results. podman sets no
/// cache directory of its own, so this is the machine's.
const LIBCNI_RESULTS_DIR: &str = "/var/lib/cni/results";

/// The chains portmap shares between all containers of the host.
const SHARED_PORTMAP_CHAINS: [&str; 3] = [
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-MASQ",
    "CNI-HOSTPORT-SETMARK",
];

/// Limits podman 4.3 needs on Debian 12 test machines. Without them runc
/// fails to raise the container's open-file limit to podman's default
/// ("error setting rlimit type 7: operation not permitted").
///
/// The global flags `--runtime runc --cgroup-manager cgroupfs` are needed
/// too: crun rejects the hybrid cgroup v1/v2 layout, and systemd is not
/// running to manage cgroups.
const RUN_LIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// One podman installation in a temporary directory: configuration, image
/// and container storage, CNI plugin links, conflist, IPAM state and
/// cniwasm's caches. Dropping it removes the containers, the bridge and
/// every NAT rule of the network, as well as the directory.
struct PodmanWorld {
    dir: tempfile::TempDir,
    network: String,
    bridge: String,
    /// Whether portmap's shared chains existed before the test, so the
    /// guard removes them only when the test created them.
    shared_chains_existed: bool,
    /// Network namespaces podman created for containers, removed by the
    /// guard if podman left them.
    container_netns: std::cell::RefCell<Vec<PathBuf>>,
}

impl PodmanWorld {
    fn create() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let world = Self {
            dir,
            network: unique_name("cwpm"),
            bridge: unique_name("cwpb"),
            shared_chains_existed: nat_rules()
                .iter()
                .any(|line| line == &format!(":{} - [0:0]", SHARED_PORTMAP_CHAINS[0])),
            container_netns: Default::default(),
        };
        assert!(
            !link_exists(&world.bridge),
            "bridge {} exists before the test",
            world.bridge
        );

        for sub in [
            "bin",
            "net.d",
            "root",
            "runroot",
            "tmp",
            "ipam",
            "cache",
            "compile-cache",
        ] {
            std::fs::create_dir_all(world.path(sub)).expect("creating podman directories");
        }
        for plugin in ["bridge", "host-local", "portmap", "loopback"] {
            std::os::unix::fs::symlink(cniwasm_binary(), world.path("bin").join(plugin))
                .expect("linking a plugin type to cniwasm");
        }

        world.write_policy();
        world.write_containers_conf();
        world.write_storage_conf();
        world.write_conflist();
        world
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Writes an explicit policy, so that a `/etc/cniwasm/policy.json` on
    /// the machine does not apply, with an audit log of the plugins that ran.
    fn write_policy(&self) {
        let policy = json!({"mode": "enforce", "auditLog": self.path("audit.log")});
        std::fs::write(self.path("policy.json"), policy.to_string()).expect("writing the policy");
    }

    /// Writes podman's configuration. The cniwasm variables go in
    /// `engine.env` because podman starts conmon with a filtered environment.
    /// When the container exits, conmon runs `podman container cleanup`,
    /// which often runs CNI DEL before `podman rm` does. Variables set only in
    /// the caller's environment do not reach that DEL, and it fails.
    fn write_containers_conf(&self) {
        let environment = [
            format!("CNIWASM_PLUGIN_PATH={}", plugin_dir().display()),
            format!(
                "CNIWASM_COMPILE_CACHE={}",
                self.path("compile-cache").display()
            ),
            format!("CNIWASM_CACHE_DIR={}", self.path("cache").display()),
            format!("CNIWASM_POLICY={}", self.path("policy.json").display()),
        ];
        let text = format!(
            "[network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [{}]\n\
             network_config_dir = {}\n\
             \n\
             [engine]\n\
             events_logger = \"file\"\n\
             events_logfile_path = {}\n\
             env = {}\n",
            toml_string(&self.path("bin")),
            toml_string(&self.path("net.d")),
            toml_string(&self.path("events.log")),
            serde_json::to_string(&environment).expect("strings serialise"),
        );
        std::fs::write(self.path("containers.conf"), text).expect("writing containers.conf");
    }

    /// Writes the storage configuration, so that
    /// `/etc/containers/storage.conf` is not read. vfs copies layers instead
    /// of mounting them, so a failed test leaves no overlay mounts.
    fn write_storage_conf(&self) {
        let text = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = {}\nrunroot = {}\n",
            toml_string(&self.path("root")),
            toml_string(&self.path("runroot")),
        );
        std::fs::write(self.path("storage.conf"), text).expect("writing storage.conf");
    }

    fn write_conflist(&self) {
        let list = json!({
            "cniVersion": "0.4.0",
            "name": self.network,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": SUBNET, "gateway": "10.244.70.1"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": self.path("ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        std::fs::write(
            self.path("net.d")
                .join(format!("{}.conflist", self.network)),
            serde_json::to_string_pretty(&list).expect("JSON serialises"),
        )
        .expect("writing the conflist");
    }

    /// Builds a podman command with the global flags that keep its state in the
    /// temporary directory. The caller's cniwasm variables are removed so
    /// that containers.conf is their only source.
    fn podman(&self, args: &[&str]) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("runroot"))
            .arg("--tmpdir")
            .arg(self.path("tmp"))
            .args([
                "--storage-driver",
                "vfs",
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .args(args)
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .stdin(Stdio::null());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CNIWASM_") {
                command.env_remove(key);
            }
        }
        command
    }

    /// Runs podman and panics with its output unless it succeeds; returns
    /// stdout.
    fn podman_ok(&self, args: &[&str]) -> String {
        let output = self.podman(args).output().expect("failed to start podman");
        assert!(
            output.status.success(),
            "podman {args:?} failed with {}\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("podman output is UTF-8")
    }

    /// Imports a one-binary image: busybox (static, since the image has no
    /// libraries) and a page for `busybox httpd` to serve.
    fn import_image(&self, name: &str, page: &str) {
        let rootfs = self.path("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).expect("creating the rootfs");
        std::fs::create_dir_all(rootfs.join("www")).expect("creating the rootfs");
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .map(Path::new)
            .find(|path| path.is_file())
            .expect("busybox is installed (package busybox-static)");
        std::fs::copy(busybox, rootfs.join("bin/busybox")).expect("copying busybox");
        std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).expect("linking sh");
        std::fs::write(rootfs.join("www/index.html"), page).expect("writing the page");

        let archive = self.path("rootfs.tar");
        run_ok(
            "tar",
            &[
                "-C",
                &rootfs.display().to_string(),
                "-cf",
                &archive.display().to_string(),
                ".",
            ],
        );
        self.podman_ok(&["import", &archive.display().to_string(), name]);
    }

    /// Files of the network's IPAM state directory, without `lock` and
    /// `last_reserved_ip.*`.
    fn reservations(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.path("ipam").join(&self.network)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name != "lock" && !name.starts_with("last_reserved_ip"))
            .collect();
        names.sort();
        names
    }

    /// Lists libcni's cached results for this network.
    fn cached_results(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(LIBCNI_RESULTS_DIR) else {
            return Vec::new();
        };
        let prefix = format!("{}-", self.network);
        entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.starts_with(&prefix))
            .collect()
    }

    /// Lists the NAT rules whose comment names this network, as portmap and the
    /// bridge's masquerade write them: `name: "NETWORK" id: "..."`.
    fn network_nat_rules(&self) -> Vec<String> {
        let marker = format!("name: \\\"{}\\\"", self.network);
        nat_rules()
            .into_iter()
            .filter(|line| line.contains(&marker))
            .collect()
    }

    /// Lists the `(plugin, command)` pairs of successful plugin calls in the audit
    /// log, in order.
    fn audited_calls(&self, container_id: &str) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.path("audit.log")).unwrap_or_default();
        text.lines()
            .map(|line| {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|error| panic!("invalid audit record ({error}): {line}"))
            })
            .filter(|record| {
                record["kind"] == "plugin-call"
                    && record["containerId"] == container_id
                    && record["outcome"] == "ok"
            })
            .map(|record| {
                (
                    record["plugin"].as_str().unwrap_or_default().to_string(),
                    record["command"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Removes the NAT rules whose comment names this network and the
    /// per-container chains they jump to.
    fn remove_network_nat_rules(&self) {
        let rules = self.network_nat_rules();
        if rules.is_empty() {
            return;
        }
        let mut chains: Vec<String> = rules
            .iter()
            .filter_map(|rule| rule.split(" -j ").nth(1))
            .filter_map(|target| target.split_whitespace().next())
            .filter(|chain| chain.starts_with("CNI-") && !SHARED_PORTMAP_CHAINS.contains(chain))
            .map(str::to_string)
            .collect();
        chains.sort();
        chains.dedup();

        let mut script = String::from("*nat\n");
        for rule in &rules {
            script.push_str(&rule.replacen("-A ", "-D ", 1));
            script.push('\n');
        }
        for chain in &chains {
            script.push_str(&format!("-F {chain}\n"));
        }
        for chain in &chains {
            script.push_str(&format!("-X {chain}\n"));
        }
        script.push_str("COMMIT\n");
        iptables_restore(&script);
    }

    /// Removes portmap's shared chains and the jumps to them, if the test
    /// created them and no other container's mapping uses them.
    fn remove_shared_portmap_chains(&self) {
        if self.shared_chains_existed {
            return;
        }
        let rules = nat_rules();
        let in_use = rules
            .iter()
            .any(|line| line.starts_with(&format!("-A {} ", SHARED_PORTMAP_CHAINS[0])));
        if in_use {
            return;
        }
        let jumps: Vec<&String> = rules
            .iter()
            .filter(|line| {
                ["-A PREROUTING ", "-A OUTPUT ", "-A POSTROUTING "]
                    .iter()
                    .any(|prefix| line.starts_with(prefix))
                    && SHARED_PORTMAP_CHAINS
                        .iter()
                        .any(|chain| line.ends_with(&format!("-j {chain}")))
            })
            .collect();
        let existing: Vec<&str> = SHARED_PORTMAP_CHAINS
            .into_iter()
            .filter(|chain| rules.contains(&format!(":{chain} - [0:0]")))
            .collect();
        if jumps.is_empty() && existing.is_empty() {
            return;
        }

        let mut script = String::from("*nat\n");
        for jump in jumps {
            script.push_str(&jump.replacen("-A ", "-D ", 1));
            script.push('\n');
        }
        for chain in &existing {
            script.push_str(&format!("-F {chain}\n"));
        }
        for chain in &existing {
            script.push_str(&format!("-X {chain}\n"));
        }
        script.push_str("COMMIT\n");
        iptables_restore(&script);
    }
}

impl Drop for PodmanWorld {
    fn drop(&mut self) {
        // Removing the containers runs CNI DEL, which is what a failed test
        // most likely skipped.
        let _ = self
            .podman(&["rm", "--all", "--force", "--time", "0"])
            .output();

        // Container mounts under the directory would make its removal fail.
        let root = self.dir.path().display().to_string();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for mount_point in mountinfo.lines().filter_map(|line| line.split(' ').nth(4)) {
            if mount_point.starts_with(&root) {
                let _ = run("umount", &["--lazy", mount_point]);
            }
        }

        for netns in self.container_netns.borrow().iter() {
            if netns.exists()
                && let Some(name) = netns.file_name()
            {
                let _ = run("ip", &["netns", "delete", &name.to_string_lossy()]);
            }
        }
        self.remove_network_nat_rules();
        self.remove_shared_portmap_chains();
        if link_exists(&self.bridge) {
            let _ = run("ip", &["link", "delete", &self.bridge]);
        }
        for name in self.cached_results() {
            let _ = std::fs::remove_file(Path::new(LIBCNI_RESULTS_DIR).join(name));
        }
    }
}

/// Quotes a path as a TOML basic string. JSON string escapes are valid in TOML.
fn toml_string(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).expect("strings serialise")
}

/// `iptables-save -t nat` of the machine, without comments and counters.
fn nat_rules() -> Vec<String> {
    run_ok("iptables-save", &["-t", "nat"])
        .lines()
        .filter(|line| !line.starts_with('#') && !line.starts_with('*') && *line != "COMMIT")
        .map(str::to_string)
        .collect()
}

/// Applies a script with `iptables-restore --noflush`, so rules of other
/// chains stay. The script may contain quoted comments from iptables-save.
fn iptables_restore(script: &str) {
    use std::io::Write;

    let mut child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .spawn()
        .expect("failed to start iptables-restore");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .expect("writing to iptables-restore");
    let status = child.wait().expect("waiting for iptables-restore");
    if !status.success() {
        eprintln!("iptables-restore failed with {status} on:\n{script}");
    }
}

fn link_exists(name: &str) -> bool {
    run("ip", &["link", "show", "dev", name]).status.success()
}

/// Names of the links whose master is `bridge`.
fn bridge_ports(bridge: &str) -> Vec<String> {
    let text = run_ok("ip", &["-j", "link", "show", "master", bridge]);
    if text.trim().is_empty() {
        return Vec::new();
    }
    let links: Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("ip -j link printed invalid JSON ({error}): {text}"));
    links
        .as_array()
        .expect("ip -j link prints an array")
        .iter()
        .filter_map(|link| link["ifname"].as_str().map(str::to_string))
        .collect()
}

/// Fetches `url` from the host; returns the body, or the curl error.
fn http_get(url: &str) -> Result<String, String> {
    let output: Output = run(
        "curl",
        &["--silent", "--show-error", "--max-time", "5", url],
    );
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Returns false, after saying why on stderr, when podman cannot run here.
fn podman_available() -> bool {
    match Command::new("podman").arg("--version").output() {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            eprintln!(
                "SKIPPED: `podman --version` failed with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            false
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {
            eprintln!(
                "SKIPPED: podman is not installed; {} installs it",
                repo_root().join("scripts/setup.sh").display()
            );
            false
        }
        Err(error) => panic!("failed to start podman: {error}"),
    }
}

#[test]
fn podman_publish_and_remove() {
    if !require_root() || !podman_available() {
        return;
    }
    let world = PodmanWorld::create();
    let page = format!("served through cniwasm on {}\n", world.network);
    world.import_image("localhost/cwbusybox", &page);
    let port = 18080 + std::process::id() % 1000;
    let container = unique_name("cwpc");

    // Start an HTTP server in a container on the test network, with its
    // port 80 published on 127.0.0.1.
    let publish = format!("127.0.0.1:{port}:80");
    let mut run_args = vec![
        "run",
        "--detach",
        "--name",
        &container,
        "--network",
        &world.network,
        "--publish",
        &publish,
    ];
    run_args.extend(RUN_LIMITS);
    run_args.extend([
        "localhost/cwbusybox",
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let container_id = world.podman_ok(&run_args).trim().to_string();
    assert_eq!(
        container_id.len(),
        64,
        "podman run printed {container_id:?}, not a container id"
    );

    let inspect: Value = serde_json::from_str(&world.podman_ok(&["inspect", &container_id]))
        .expect("podman inspect prints JSON");
    let settings = &inspect[0]["NetworkSettings"];
    let netns = PathBuf::from(settings["SandboxKey"].as_str().expect("a SandboxKey"));
    world.container_netns.borrow_mut().push(netns.clone());
    let address = settings["Networks"][&world.network]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("no address on {}: {settings}", world.network))
        .to_string();

    // The chain's effects: a veth on the bridge, the address reserved, the
    // port mapping and the masquerade rule for this container.
    assert!(
        address.starts_with("10.244.70."),
        "address {address} is outside {SUBNET}"
    );
    let ports = bridge_ports(&world.bridge);
    assert_eq!(ports.len(), 1, "ports of {}: {ports:?}", world.bridge);
    let veth = ports[0].clone();
    assert!(veth.starts_with("veth"), "bridge port {veth} is not a veth");
    assert_eq!(world.reservations(), vec![address.clone()]);
    let rules = world.network_nat_rules();
    assert!(
        rules.iter().any(|rule| rule.contains(&container_id)),
        "no NAT rule names container {container_id}: {rules:#?}"
    );
    let dnat = format!("--to-destination {address}:80");
    assert!(
        nat_rules()
            .iter()
            .any(|rule| rule.contains(&format!("--dport {port} ")) && rule.ends_with(&dnat)),
        "no DNAT of port {port} to {address}:80"
    );
    assert_eq!(world.cached_results().len(), 1, "libcni caches one result");

    // podman ran the wasm plugins through cniwasm: the audit log records
    // each ADD.
    let calls = world.audited_calls(&container_id);
    for plugin in ["bridge", "host-local", "portmap"] {
        assert!(
            calls.contains(&(plugin.to_string(), "ADD".to_string())),
            "no successful ADD of {plugin} in the audit log: {calls:?}"
        );
    }

    // HTTP from the host to the published port reaches the container. The
    // server may need a moment after `podman run` returns.
    let url = format!("http://127.0.0.1:{port}/");
    let started = Instant::now();
    let body = loop {
        match http_get(&url) {
            Ok(body) => break body,
            Err(error) if started.elapsed() > Duration::from_secs(10) => {
                panic!("GET {url} failed for 10 s: {error}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert_eq!(body, page);

    // Removing the container runs DEL through the chain.
    world.podman_ok(&["rm", "--force", "--time", "0", &container_id]);

    assert!(!link_exists(&veth), "veth {veth} is still there");
    assert_eq!(bridge_ports(&world.bridge), Vec::<String>::new());
    assert_eq!(
        world.network_nat_rules(),
        Vec::<String>::new(),
        "NAT rules of {} remain",
        world.network
    );
    let remaining: Vec<String> = nat_rules()
        .into_iter()
        .filter(|rule| rule.contains(&container_id) || rule.contains(&address))
        .collect();
    assert_eq!(
        remaining,
        Vec::<String>::new(),
        "NAT rules of the container remain"
    );
    assert_eq!(world.reservations(), Vec::<String>::new());
    assert_eq!(world.cached_results(), Vec::<String>::new());
    assert!(!netns.exists(), "{} is still there", netns.display());
    let calls = world.audited_calls(&container_id);
    for plugin in ["portmap", "bridge", "host-local"] {
        assert!(
            calls.contains(&(plugin.to_string(), "DEL".to_string())),
            "no successful DEL of {plugin} in the audit log: {calls:?}"
        );
    }
    assert!(
        http_get(&url).is_err(),
        "{url} still answers after the container was removed"
    );
}
