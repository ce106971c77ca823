//! Wiring between the WIT exports and the [`Plugin`] trait.

use std::marker::PhantomData;

use serde_json::Value;

use cniwasm_types::{CniError, codes, print_json, result_to_json, version_at_least};

use crate::Plugin;
use crate::bindings::Guest;
use crate::bindings::cniwasm::host::types::{CniError as WitCniError, Invocation as WitInvocation};
use crate::config::PluginConfig;
use crate::host::to_wit_error;
use crate::invocation::Invocation;

/// A CNI command, for the version checks that precede it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
}

impl Command {
    /// The lowest configuration version in which the command exists.
    fn minimum_version(self) -> Option<&'static str> {
        match self {
            Command::Add | Command::Del => None,
            Command::Check => Some("0.4.0"),
            Command::Status | Command::Gc => Some("1.1.0"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }
}

/// The output of ADD.
#[derive(Debug, Clone, PartialEq)]
pub enum AddOutput {
    /// A result that the SDK renders in the configuration's `cniVersion`.
    Result(cniwasm_types::Result),
    /// JSON printed as it is; the plugin is responsible for its layout.
    Json(Value),
}

impl From<cniwasm_types::Result> for AddOutput {
    fn from(result: cniwasm_types::Result) -> Self {
        AddOutput::Result(result)
    }
}

impl From<Value> for AddOutput {
    fn from(value: Value) -> Self {
        AddOutput::Json(value)
    }
}

/// Renders ADD's output as JSON text in `version`'s layout, indented by 4
/// spaces as the reference plugins print it. A result that the version cannot
/// express (two IPv4 addresses in 0.2.0) is code 999.
pub fn render_add_output(output: AddOutput, version: &str) -> Result<String, CniError> {
    let value = match output {
        AddOutput::Result(result) => result_to_json(&result, version).map_err(|error| {
            CniError::new(
                codes::INTERNAL,
                format!("failed to convert result to CNI version {version}: {error}"),
            )
        })?,
        AddOutput::Json(value) => value,
    };
    Ok(print_json(&value))
}

/// Implements the generated WIT exports for a [`Plugin`]; used by
/// [`export_plugin!`](crate::export_plugin).
pub struct Adapter<P>(PhantomData<P>);

impl<P: Plugin> Adapter<P> {
    fn prepare(command: Command, config: &str) -> Result<PluginConfig, CniError> {
        let config = PluginConfig::parse(config, &P::supported_versions())?;

        if let Some(minimum) = command.minimum_version()
            && !version_at_least(&config.cni_version, minimum)
        {
            return Err(CniError::new(
                codes::INCOMPATIBLE_CNI_VERSION,
                format!("config version does not allow {}", command.name()),
            )
            .with_details(format!(
                "config is {:?}, {} needs {minimum} or later",
                config.cni_version,
                command.name()
            )));
        }
        Ok(config)
    }

    /// Runs ADD on configuration text and returns the rendered result.
    pub fn run_add(inv: &Invocation, config: &str) -> Result<String, CniError> {
        let config = Self::prepare(Command::Add, config)?;
        let output = P::add(inv, &config)?;
        render_add_output(output, &config.cni_version)
    }

    /// Runs a command without output on configuration text.
    pub fn run(command: Command, inv: &Invocation, config: &str) -> Result<(), CniError> {
        let config = Self::prepare(command, config)?;
        match command {
            Command::Add => P::add(inv, &config).map(|_| ()),
            Command::Del => P::del(inv, &config),
            Command::Check => P::check(inv, &config),
            Command::Status => P::status(inv, &config),
            Command::Gc => P::gc(inv, &config),
        }
    }
}

impl<P: Plugin> Guest for Adapter<P> {
    fn supported_versions() -> Vec<String> {
        P::supported_versions()
    }

    fn add(inv: WitInvocation, config: String) -> Result<String, WitCniError> {
        Self::run_add(&inv.into(), &config).map_err(to_wit_error)
    }

    fn del(inv: WitInvocation, config: String) -> Result<(), WitCniError> {
        Self::run(Command::Del, &inv.into(), &config).map_err(to_wit_error)
    }

    fn check(inv: WitInvocation, config: String) -> Result<(), WitCniError> {
        Self::run(Command::Check, &inv.into(), &config).map_err(to_wit_error)
    }

    fn status(inv: WitInvocation, config: String) -> Result<(), WitCniError> {
        Self::run(Command::Status, &inv.into(), &config).map_err(to_wit_error)
    }

    fn gc(inv: WitInvocation, config: String) -> Result<(), WitCniError> {
        Self::run(Command::Gc, &inv.into(), &config).map_err(to_wit_error)
    }
}

#[cfg(test)]
mod tests {
    use cniwasm_types::{Interface, IpConfig, Route};
    use serde_json::json;

    use super::*;

    struct Fixed;

    impl Plugin for Fixed {
        fn add(inv: &Invocation, _: &PluginConfig) -> Result<AddOutput, CniError> {
            Ok(AddOutput::Result(cniwasm_types::Result {
                interfaces: vec![Interface {
                    name: inv.ifname.clone(),
                    mac: "0a:58:0a:01:02:02".into(),
                    mtu: 1500,
                    sandbox: "/run/netns/a".into(),
                    ..Default::default()
                }],
                ips: vec![IpConfig {
                    interface: Some(0),
                    address: "10.1.2.2/24".into(),
                    gateway: "10.1.2.1".into(),
                }],
                routes: vec![Route {
                    dst: "0.0.0.0/0".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }))
        }

        fn del(_: &Invocation, _: &PluginConfig) -> Result<(), CniError> {
            Ok(())
        }

        fn check(_: &Invocation, _: &PluginConfig) -> Result<(), CniError> {
            Ok(())
        }
    }

    fn add_in(version: &str) -> Value {
        let inv = Invocation {
            ifname: "eth0".into(),
            ..Default::default()
        };
        let config = json!({"cniVersion": version, "name": "n"}).to_string();
        let text = Adapter::<Fixed>::run_add(&inv, &config).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn add_renders_each_version() {
        for version in ["0.3.0", "0.3.1", "0.4.0"] {
            let value = add_in(version);
            assert_eq!(value["cniVersion"], json!(version));
            assert_eq!(value["ips"][0]["version"], json!("4"), "{version}");
            assert_eq!(value["interfaces"][0].get("mtu"), None, "{version}");
        }
        for version in ["1.0.0", "1.1.0"] {
            let value = add_in(version);
            assert_eq!(value["cniVersion"], json!(version));
            assert_eq!(value["ips"][0].get("version"), None, "{version}");
            assert_eq!(value["ips"][0]["interface"], json!(0), "{version}");
        }
        for version in ["0.1.0", "0.2.0"] {
            let value = add_in(version);
            assert_eq!(value["ip4"]["ip"], json!("10.1.2.2/24"), "{version}");
            assert_eq!(value.get("interfaces"), None, "{version}");
        }
    }

    #[test]
    fn add_output_is_indented_by_4() {
        let inv = Invocation::default();
        let config = json!({"cniVersion": "1.0.0", "name": "n"}).to_string();
        let text = Adapter::<Fixed>::run_add(&inv, &config).unwrap();
        assert!(text.starts_with("{\n    \"cniVersion\""));
    }

    #[test]
    fn check_needs_0_4_0() {
        let config = json!({"cniVersion": "0.3.1", "name": "n"}).to_string();
        let error =
            Adapter::<Fixed>::run(Command::Check, &Invocation::default(), &config).unwrap_err();
        assert_eq!(error.code, 1);
        assert_eq!(error.msg, "config version does not allow CHECK");
    }

    #[test]
    fn status_and_gc_default_to_success() {
        let config = json!({"cniVersion": "1.1.0", "name": "n"}).to_string();
        let inv = Invocation::default();
        assert!(Adapter::<Fixed>::run(Command::Status, &inv, &config).is_ok());
        assert!(Adapter::<Fixed>::run(Command::Gc, &inv, &config).is_ok());
    }

    #[test]
    fn gc_needs_1_1_0() {
        let config = json!({"cniVersion": "1.0.0", "name": "n"}).to_string();
        let error =
            Adapter::<Fixed>::run(Command::Gc, &Invocation::default(), &config).unwrap_err();
        assert_eq!(error.code, 1);
    }

    #[test]
    fn json_output_is_printed_unchanged() {
        let text = render_add_output(AddOutput::Json(json!({"a": 1})), "1.0.0").unwrap();
        assert_eq!(text, "{\n    \"a\": 1\n}");
    }
}
