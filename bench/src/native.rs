//! The native floor: the kernel work of one seed-chain ADD or DEL, with no
//! plugin runtime around it. Links, addresses and routes go through two
//! `ip -batch` runs (one per namespace), the NAT rules through one
//! `iptables-restore --noflush`, and sysctls are written directly. The rules
//! are those cniwasm installs for the seed chain (bridge with ipMasq, portmap
//! of 127.0.0.1:9090 to port 80), named by the same owner hashes.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use cniwasm_host_api::kernel::Owner;

const NETWORK: &str = "mynet";
const BRIDGE: &str = "mynet";
const SUBNET: &str = "10.244.10.0/24";
const GATEWAY: &str = "10.244.10.1";

/// One container of the native path.
pub struct Container {
    /// Name of the container's namespace under /var/run/netns.
    pub netns: String,
    pub container_id: String,
    /// Picks the host veth name and the address, so they differ per container.
    pub index: usize,
}

impl Container {
    fn host_veth(&self) -> String {
        format!("vn{}", self.index)
    }

    /// An address in 10.244.10.2 to 10.244.10.251.
    fn address(&self) -> String {
        format!("10.244.10.{}", 2 + self.index % 250)
    }

    fn owner(&self) -> Owner {
        Owner {
            network: NETWORK.into(),
            container_id: self.container_id.clone(),
            ifname: "eth0".into(),
        }
    }
}

/// Creates the bridge, its gateway address and the shared portmap chains:
/// what the first cniwasm ADD on a fresh host creates and later ADDs reuse.
pub fn setup() -> anyhow::Result<()> {
    ip_batch(
        &[],
        &format!(
            "link add {BRIDGE} type bridge\nlink set {BRIDGE} up\naddr add {GATEWAY}/24 dev {BRIDGE}\n"
        ),
    )?;
    write_sysctl("net/ipv4/ip_forward", "1")?;

    let script = [
        "*nat",
        ":CNI-HOSTPORT-DNAT - [0:0]",
        ":CNI-HOSTPORT-MASQ - [0:0]",
        ":CNI-HOSTPORT-SETMARK - [0:0]",
        "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
        "-A OUTPUT -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
        "-A POSTROUTING -m comment --comment \"CNI portfwd requiring masquerade\" -j CNI-HOSTPORT-MASQ",
        "-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE",
        "-A CNI-HOSTPORT-SETMARK -m comment --comment \"CNI portfwd masquerade mark\" -j MARK --set-xmark 0x2000/0x2000",
        "COMMIT",
    ];
    iptables_restore(&script.join("\n"))
}

/// Attaches the container: veth pair with its peer created directly in the
/// container, address, default route, sysctls, masquerade and DNAT rules.
pub fn add(container: &Container) -> anyhow::Result<()> {
    let veth = container.host_veth();
    let address = container.address();
    let netns = &container.netns;

    ip_batch(
        &[],
        &format!(
            "link add {veth} type veth peer name eth0 netns {netns}\nlink set {veth} master {BRIDGE} up\n"
        ),
    )?;
    write_sysctl(&format!("net/ipv6/conf/{BRIDGE}/accept_ra"), "0")?;
    in_netns(netns, || {
        write_sysctl("net/ipv4/conf/eth0/arp_notify", "1")?;
        write_sysctl("net/ipv6/conf/eth0/accept_dad", "0")
    })?;
    ip_batch(
        &["-n", netns],
        &format!(
            "addr add {address}/24 dev eth0\nlink set eth0 up\nroute add default via {GATEWAY} dev eth0\n"
        ),
    )?;

    // Before the DNAT rules, as cniwasm does, so 127.0.0.1 is routable.
    write_sysctl(&format!("net/ipv4/conf/{BRIDGE}/route_localnet"), "1")?;
    iptables_restore(&add_rules(container))
}

/// Detaches the container: removes its rules and the host veth, which takes
/// the peer in the container with it.
pub fn del(container: &Container) -> anyhow::Result<()> {
    iptables_restore(&delete_rules(container))?;
    ip_batch(&[], &format!("link del {}\n", container.host_veth()))
}

fn add_rules(container: &Container) -> String {
    let owner = container.owner();
    let masquerade = owner.masquerade_chain();
    let dnat = owner.dnat_chain();
    let comment = format!("{:?}", owner.comment());
    let dnat_comment = format!("{:?}", format!("dnat {}", owner.comment()));
    let address = container.address();

    [
        "*nat".to_string(),
        format!(":{masquerade} - [0:0]"),
        format!(":{dnat} - [0:0]"),
        format!("-A {masquerade} -d {SUBNET} -m comment --comment {comment} -j ACCEPT"),
        format!("-A {masquerade} ! -d 224.0.0.0/4 -m comment --comment {comment} -j MASQUERADE"),
        format!("-A POSTROUTING -s {address}/32 -m comment --comment {comment} -j {masquerade}"),
        format!(
            "-A {dnat} -s {SUBNET} -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j CNI-HOSTPORT-SETMARK"
        ),
        format!(
            "-A {dnat} -s 127.0.0.1/32 -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j CNI-HOSTPORT-SETMARK"
        ),
        format!(
            "-A {dnat} -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j DNAT --to-destination {address}:80"
        ),
        format!(
            "-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment {dnat_comment} -m multiport --dports 9090 -j {dnat}"
        ),
        "COMMIT".to_string(),
    ]
    .join("\n")
}

fn delete_rules(container: &Container) -> String {
    let owner = container.owner();
    let masquerade = owner.masquerade_chain();
    let dnat = owner.dnat_chain();
    let comment = format!("{:?}", owner.comment());
    let dnat_comment = format!("{:?}", format!("dnat {}", owner.comment()));
    let address = container.address();

    [
        "*nat".to_string(),
        format!(
            "-D CNI-HOSTPORT-DNAT -p tcp -m comment --comment {dnat_comment} -m multiport --dports 9090 -j {dnat}"
        ),
        format!("-F {dnat}"),
        format!("-X {dnat}"),
        format!("-D POSTROUTING -s {address}/32 -m comment --comment {comment} -j {masquerade}"),
        format!("-F {masquerade}"),
        format!("-X {masquerade}"),
        "COMMIT".to_string(),
    ]
    .join("\n")
}

/// Runs `ip [options] -batch -` with `commands` on stdin.
fn ip_batch(options: &[&str], commands: &str) -> anyhow::Result<()> {
    let mut command = Command::new("ip");
    command.args(options).args(["-batch", "-"]);
    feed(&mut command, commands)
}

fn iptables_restore(script: &str) -> anyhow::Result<()> {
    let mut command = Command::new("iptables-restore");
    command.args(["--noflush", "-w"]);
    feed(&mut command, &format!("{script}\n"))
}

/// Runs `command` with `input` on stdin and fails with its stderr unless it
/// exits with status 0.
fn feed(command: &mut Command, input: &str) -> anyhow::Result<()> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {command:?}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{command:?} failed with {}: {}\ninput:\n{input}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Writes a kernel parameter of the calling thread's network namespace;
/// `key` is the path under /proc/sys.
fn write_sysctl(key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/{key}");
    std::fs::write(&path, value).with_context(|| format!("failed to write {path}"))
}

/// Runs `work` on a new thread that joined the network namespace `name`, so
/// the rest of the process stays where it is.
fn in_netns(name: &str, work: impl FnOnce() -> anyhow::Result<()> + Send) -> anyhow::Result<()> {
    let path = format!("/var/run/netns/{name}");
    let file = File::open(&path).with_context(|| format!("failed to open {path}"))?;

    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            // SAFETY: `file` is an open namespace file for this whole call,
            // and setns only changes this short-lived thread's namespace.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("setns into {path} failed"));
            }
            work()
        });
        thread.join().expect("the namespace thread does not panic")
    })
}
