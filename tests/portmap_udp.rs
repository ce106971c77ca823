//! UDP port mappings and conntrack: a client that keeps sending from one
//! source port must reach the container that maps the host port now, not
//! the one that mapped it when its flow started.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

use cniwasm_integration_tests::{Netns, Scenario, require_root};
use serde_json::Value;

const CONFLIST: &str = r#"{
  "name": "udpnet",
  "cniVersion": "1.0.0",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "udpbr",
      "isGateway": true,
      "ipMasq": true,
      "ipam": {"type": "host-local", "subnet": "10.244.20.0/24"}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}"#;

const CAP_ARGS: &str =
    r#"{"portMappings":[{"hostPort":9053,"containerPort":53,"protocol":"udp"}]}"#;

const GATEWAY: &str = "10.244.20.1:9053";

/// Binds a UDP socket to `address` inside `netns`. A socket stays in the
/// namespace it was created in, so only the binding thread switches.
fn udp_socket_in(netns: &Netns, address: &str) -> UdpSocket {
    let path = netns.path();
    let address = address.to_string();
    let thread = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns with a network namespace descriptor changes only
        // the calling thread's namespace, and this thread ends right after.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        UdpSocket::bind(&address).unwrap()
    });
    let socket = thread.join().unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    socket
}

fn add(scenario: &Scenario, container: &Netns) -> String {
    let netns = container.path();
    let output = scenario.cniwasm(
        &["add", "udpnet", netns.to_str().unwrap()],
        &[("CAP_ARGS", CAP_ARGS)],
    );
    output.assert_success();
    let result: Value = output.json();
    result["ips"][0]["address"].as_str().unwrap().to_string()
}

fn del(scenario: &Scenario, container: &Netns) {
    let netns = container.path();
    scenario
        .cniwasm(
            &["del", "udpnet", netns.to_str().unwrap()],
            &[("CAP_ARGS", CAP_ARGS)],
        )
        .assert_success();
}

/// Returns the datagram `receiver` gets, or `None` after its timeout.
fn receive(receiver: &UdpSocket) -> Option<String> {
    let mut buffer = [0u8; 64];
    let (length, _) = receiver.recv_from(&mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..length]).into_owned())
}

#[test]
fn udp_flow_follows_new_container() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-udpnet.conflist", CONFLIST);
    let sender = udp_socket_in(&scenario.host, "0.0.0.0:5555");

    let first = Netns::create("cwua");
    let first_address = add(&scenario, &first);
    let first_receiver = udp_socket_in(&first, "0.0.0.0:53");
    sender.send_to(b"one", GATEWAY).unwrap();
    assert_eq!(receive(&first_receiver).as_deref(), Some("one"));
    del(&scenario, &first);

    // host-local hands out the next address, so a stale conntrack entry
    // would still send the flow to the first container's address.
    let second = Netns::create("cwub");
    let second_address = add(&scenario, &second);
    assert_ne!(second_address, first_address);
    let second_receiver = udp_socket_in(&second, "0.0.0.0:53");
    sender.send_to(b"two", GATEWAY).unwrap();
    assert_eq!(receive(&second_receiver).as_deref(), Some("two"));

    del(&scenario, &second);
}
