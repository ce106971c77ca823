//! portmap after ptp: the mapped port reaches the container from the host
//! through the host end's address and through 127.0.0.1, and from the
//! container itself through the host address (hairpin).

use cniwasm_integration_tests::{HttpServer, Netns, Scenario, http_get, require_root};
use serde_json::Value;

const CONFLIST: &str = r#"{
  "name": "ptpnet",
  "cniVersion": "1.0.0",
  "plugins": [
    {
      "type": "ptp",
      "ipMasq": true,
      "ipam": {"type": "host-local", "subnet": "10.244.31.0/24"}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}"#;

const CAP_ARGS: &str =
    r#"{"portMappings":[{"hostPort":8082,"containerPort":80,"protocol":"tcp"}]}"#;

fn cniwasm_ok(scenario: &Scenario, command: &str, container: &Netns) -> String {
    let netns = container.path();
    let output = scenario.cniwasm(
        &[command, "ptpnet", netns.to_str().unwrap()],
        &[("CAP_ARGS", CAP_ARGS)],
    );
    output.assert_success();
    output.stdout
}

#[test]
fn ptp_portmap_reaches_container() {
    if !require_root() {
        return;
    }
    let scenario = Scenario::new();
    scenario.write_config("10-ptpnet.conflist", CONFLIST);
    let container = Netns::create("cwp");

    let result: Value = serde_json::from_str(&cniwasm_ok(&scenario, "add", &container)).unwrap();
    let gateway = result["ips"][0]["gateway"].as_str().unwrap().to_string();
    let _server = HttpServer::start(&container, 80, "mapped over ptp");
    let host_url = format!("http://{gateway}:8082/");

    let expected = Some("mapped over ptp");
    assert_eq!(http_get(&scenario.host, &host_url).as_deref(), expected);
    assert_eq!(
        http_get(&scenario.host, "http://127.0.0.1:8082/").as_deref(),
        expected
    );
    assert_eq!(http_get(&container, &host_url).as_deref(), expected);

    cniwasm_ok(&scenario, "del", &container);
    assert_eq!(http_get(&scenario.host, &host_url), None);
    let rules = scenario.host.nat_rules();
    assert!(
        rules.iter().all(|rule| !rule.contains("CNI-DN-")),
        "{rules:#?}"
    );
}
