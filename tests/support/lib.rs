//! Helpers for the integration tests: network namespaces that clean up after
//! themselves, a throwaway "host" namespace per test, and running `cniwasm`
//! and the reference CNI plugins inside it.
//!
//! Every test creates its own namespaces with unique names, so tests can run
//! in parallel and nothing touches the machine's own namespace: bridges,
//! sysctls and iptables rules live and die with the test's host namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

pub mod reference;
pub mod vm;

/// Panics unless the tests run as root, because a skipped privileged test
/// must never read as a pass. `CNIWASM_SKIP_PRIVILEGED=1` skips visibly
/// instead and returns false.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CNIWASM_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        eprintln!("SKIPPED: this test needs root (CNIWASM_SKIP_PRIVILEGED=1 is set)");
        return false;
    }
    panic!(
        "this test needs root to create network namespaces; run it as root or set CNIWASM_SKIP_PRIVILEGED=1 to skip it visibly"
    );
}

/// Returns the container id that cnitool derives from a namespace path:
/// `cnitool-` and the first 20 hex digits of the SHA-512 of the path.
pub fn container_id(netns: &str) -> String {
    use sha2::{Digest, Sha512};
    format!(
        "cnitool-{}",
        &hex::encode(Sha512::digest(netns.as_bytes()))[..20]
    )
}

/// A short name unique to this process and call, such as `cwh4711x3`.
/// Interface and namespace names stay well under 15 bytes.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// Runs a command and returns its output; panics if it cannot start.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("failed to start {program}: {error}"))
}

/// Runs a command that must succeed and returns its stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("command output is UTF-8")
}

/// Creates `dir/bin` with a link to `ip` alone and returns the directory, a
/// `PATH` on which cniwasm runs in a namespace but finds no other program,
/// such as `nft`.
pub fn ip_only_path(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).expect("creating the bin directory");
    let ip = ["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip", "/bin/ip"]
        .into_iter()
        .find(|path| Path::new(path).is_file())
        .expect("ip is installed");
    std::os::unix::fs::symlink(ip, bin.join("ip")).expect("linking ip");
    bin
}

/// A named network namespace (`ip netns add`), deleted when dropped, also
/// when the test panics.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn create(prefix: &str) -> Self {
        let name = unique_name(prefix);
        run_ok("ip", &["netns", "add", &name]);
        let netns = Self { name };
        netns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        netns
    }

    /// The path a CNI runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.name))
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    pub fn exec_ok(&self, args: &[&str]) -> String {
        let output = self.exec(args);
        assert!(
            output.status.success(),
            "{args:?} in netns {} failed with {}: {}",
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("command output is UTF-8")
    }

    /// Parses `ip -j ARGS` run inside the namespace.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["ip", "-j"];
        full.extend_from_slice(args);
        let text = self.exec_ok(&full);
        if text.trim().is_empty() {
            return Value::Array(Vec::new());
        }
        serde_json::from_str(&text)
            .unwrap_or_else(|error| panic!("ip -j {args:?} printed invalid JSON: {error}: {text}"))
    }

    /// Names of the links in the namespace.
    pub fn link_names(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .expect("ip -j link prints an array")
            .iter()
            .filter_map(|link| link["ifname"].as_str().map(str::to_string))
            .collect()
    }

    /// Returns the global addresses of link `dev` in both families, sorted,
    /// as `address/prefix`.
    pub fn global_addresses(&self, dev: &str) -> Vec<String> {
        let links = self.ip_json(&["addr", "show", "dev", dev]);
        let mut addresses: Vec<String> = links[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|address| address["scope"] == "global")
            .map(|address| {
                format!(
                    "{}/{}",
                    address["local"].as_str().unwrap_or("?"),
                    address["prefixlen"]
                )
            })
            .collect();
        addresses.sort();
        addresses
    }

    /// `iptables-save -t nat` inside the namespace, without comments and counters.
    pub fn nat_rules(&self) -> Vec<String> {
        self.saved_table("iptables-save", "nat")
    }

    /// `ip6tables-save -t nat` inside the namespace, without comments and counters.
    pub fn nat6_rules(&self) -> Vec<String> {
        self.saved_table("ip6tables-save", "nat")
    }

    /// Returns the filter table of both families, IPv4 first, without
    /// comments and counters. Each IPv6 line starts with `v6 `.
    pub fn filter_rules(&self) -> Vec<String> {
        let v6 = self.saved_table("ip6tables-save", "filter");
        let mut rules = self.saved_table("iptables-save", "filter");
        rules.extend(v6.into_iter().map(|line| format!("v6 {line}")));
        rules
    }

    /// Runs `command -t table` (iptables-save or ip6tables-save) and keeps
    /// the chain declarations and rules.
    fn saved_table(&self, command: &str, table: &str) -> Vec<String> {
        self.exec_ok(&[command, "-t", table])
            .lines()
            .filter(|line| !line.starts_with('#') && !line.starts_with('*') && *line != "COMMIT")
            // A chain declaration ends with its packet and byte counters.
            .map(|line| match line.starts_with(':') {
                true => line.split(" [").next().unwrap_or(line).to_string(),
                false => line.to_string(),
            })
            .collect()
    }

    /// Returns the objects of nftables table `family table` in the
    /// namespace (table, chains, rules), as `nft -j list table` prints them,
    /// without the `metainfo` entry and the handles, which differ between
    /// runs. A missing table gives an empty list.
    pub fn nft_table(&self, family: &str, table: &str) -> Vec<Value> {
        let listing = self.exec_ok(&["nft", "-j", "list", "ruleset", family]);
        let listing: Value = serde_json::from_str(&listing)
            .unwrap_or_else(|error| panic!("nft -j printed invalid JSON: {error}: {listing}"));
        let objects = listing["nftables"]
            .as_array()
            .expect("nft -j prints an nftables array");
        objects
            .iter()
            .filter_map(|object| {
                let (kind, body) = object.as_object()?.iter().next()?;
                let in_table = match kind.as_str() {
                    "table" => body["name"] == table,
                    "chain" | "rule" => body["table"] == table,
                    _ => false,
                };
                let mut body = body.clone();
                body.as_object_mut()?.remove("handle");
                in_table.then(|| json!({ kind: body }))
            })
            .collect()
    }

    pub fn exists(&self) -> bool {
        Path::new(&format!("/var/run/netns/{}", self.name)).exists()
    }

    /// Deletes the namespace before the guard is dropped.
    pub fn delete(&self) {
        if self.exists() {
            run_ok("ip", &["netns", "delete", &self.name]);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.exists() {
            let _ = run("ip", &["netns", "delete", &self.name]);
        }
    }
}

/// The root of the repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Directory of the built wasm plugins.
pub fn plugin_dir() -> PathBuf {
    let dir = repo_root().join("plugins-wasm/out");
    assert!(
        dir.join("bridge.wasm").is_file(),
        "wasm plugins not built in {}: run `make build` first",
        dir.display()
    );
    dir
}

/// The `cniwasm` binary built by this workspace, next to the test binary's
/// `deps` directory.
pub fn cniwasm_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let binary = profile_dir.join("cniwasm");
    assert!(
        binary.is_file(),
        "{} not found: run `cargo build --workspace` first",
        binary.display()
    );
    binary
}

/// A compile cache shared by all tests, so each plugin compiles once per run.
pub fn shared_compile_cache() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .join("cniwasm-compile-cache")
}

/// How long one `cniwasm` run in a test may take, in seconds.
const CNIWASM_TIMEOUT_SECONDS: &str = "120";

/// The state one test's cniwasm runs use: a throwaway host namespace and
/// private configuration, cache and IPAM directories.
pub struct Scenario {
    pub host: Netns,
    pub dir: tempfile::TempDir,
}

/// The output of one `cniwasm` run.
pub struct CliOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|error| {
            panic!(
                "stdout is not JSON ({error}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "cniwasm failed with {}\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

impl Scenario {
    pub fn new() -> Self {
        let host = Netns::create("cwh");
        let dir = tempfile::tempdir().expect("a temporary directory");
        for sub in ["net.d", "cache", "ipam"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("creating scenario directories");
        }
        Self { host, dir }
    }

    pub fn netconf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// Writes a configuration file into this scenario's NETCONFPATH.
    pub fn write_config(&self, file: &str, text: &str) {
        std::fs::write(self.netconf_dir().join(file), text).expect("writing a configuration file");
    }

    /// Runs `cniwasm ARGS` inside the host namespace with this scenario's
    /// directories and the extra environment `env`.
    pub fn cniwasm(&self, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
        let binary = cniwasm_binary();
        // A hung call fails its test with status 124 instead of stalling
        // the run. The limit (seconds) is far above any call's duration,
        // also in the TCG VM that runs the VLAN tests.
        // By path, because some tests give cniwasm a PATH without coreutils.
        let mut command = Command::new("/usr/bin/timeout");
        command
            .args(["--kill-after=5", CNIWASM_TIMEOUT_SECONDS])
            .args(["ip", "netns", "exec", &self.host.name])
            .arg(&binary)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NETCONFPATH", self.netconf_dir())
            .env("CNI_PATH", plugin_dir())
            .env("CNIWASM_CACHE_DIR", self.cache_dir())
            .env("CNIWASM_IPAM_DATA_DIR", self.ipam_dir())
            .env("CNIWASM_COMPILE_CACHE", shared_compile_cache())
            .stdin(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let output = command.output().expect("failed to start cniwasm");
        CliOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Files of the network's IPAM state directory, without `lock` and
    /// `last_reserved_ip.*`.
    pub fn reservations(&self, network: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.ipam_dir().join(network)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name != "lock" && !name.starts_with("last_reserved_ip"))
            .collect();
        names.sort();
        names
    }

    /// Files in the result cache.
    pub fn cache_files(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.cache_dir().join("results")) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .collect()
    }

    /// Asserts that a failed ADD on `network` left nothing behind: the host
    /// has the links of `host_links`, the container only `lo`, and there is
    /// no reservation and no cache file.
    pub fn assert_nothing_left(&self, network: &str, host_links: &[String], container: &Netns) {
        assert_eq!(self.host.link_names(), host_links, "host links left behind");
        assert_eq!(
            container.link_names(),
            vec!["lo".to_string()],
            "container links left behind"
        );
        assert!(
            self.reservations(network).is_empty(),
            "reservations left behind"
        );
        assert!(self.cache_files().is_empty(), "cache files left behind");
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self::new()
    }
}

/// Asserts a failed run printed a CNI error with `code` whose message
/// contains `needle`, and returns the error object.
pub fn assert_cni_error(output: &CliOutput, code: u64, needle: &str) -> Value {
    assert!(
        !output.status.success(),
        "expected a failure, got success: {}",
        output.stdout
    );
    let error = output.json();
    assert_eq!(error["code"].as_u64(), Some(code), "{error}");
    let message = error["msg"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "message {message:?} does not contain {needle:?}"
    );
    assert!(!output.stderr.trim().is_empty(), "no message on stderr");
    error
}

/// A throwaway HTTP server inside a namespace, stopped when dropped.
pub struct HttpServer {
    child: std::process::Child,
    _root: tempfile::TempDir,
}

impl HttpServer {
    /// Serves a file `index.html` containing `body` on `port` in `netns`.
    pub fn start(netns: &Netns, port: u16, body: &str) -> Self {
        let root = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(root.path().join("index.html"), body).expect("writing index.html");
        let child = Command::new("ip")
            .args(["netns", "exec", &netns.name, "busybox", "httpd", "-f", "-p"])
            .arg(port.to_string())
            .arg("-h")
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to start busybox httpd");
        let server = Self { child, _root: root };
        wait_for_listener(netns, port);
        server
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_listener(netns: &Netns, port: u16) {
    let wanted = format!(":{port}");
    for _ in 0..100 {
        let listening = netns.exec_ok(&["ss", "-Hltn"]);
        if listening.lines().any(|line| {
            line.split_whitespace()
                .nth(3)
                .is_some_and(|local| local.ends_with(&wanted))
        }) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!(
        "no server listening on port {port} in netns {} after 2 s",
        netns.name
    );
}

/// Fetches `url` with curl from inside `netns`; returns the body, or `None`
/// when the request failed.
pub fn http_get(netns: &Netns, url: &str) -> Option<String> {
    let output = netns.exec(&["curl", "--silent", "--max-time", "5", url]);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Blanks what differs between two runs: MACs, the host veth's random name
/// and the sandbox path.
pub fn normalize_result(result: &Value) -> Value {
    let mut result = result.clone();
    for interface in result["interfaces"].as_array_mut().into_iter().flatten() {
        interface["mac"] = json!("<mac>");
        if interface.get("sandbox").is_some() {
            interface["sandbox"] = json!("<netns>");
        }
        if interface["name"]
            .as_str()
            .is_some_and(|name| name.starts_with("veth"))
        {
            interface["name"] = json!("<veth>");
        }
    }
    result
}
