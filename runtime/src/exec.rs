//! Exec-protocol mode: `cniwasm` started as a CNI plugin executable, by a
//! container runtime that runs plugins itself (containerd, CRI-O, podman
//! through libcni). It reads the `CNI_*` environment and the configuration
//! on stdin, runs one wasm plugin in the same sandbox, under the same policy
//! and audit as the CLI, and writes its output to stdout as a CNI plugin must.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use cniwasm_types::{CniError, SUPPORTED_VERSIONS, codes};
use serde_json::{Map, Value, json};

use crate::chain::{Attachment, Runtime, RuntimeOptions};
use crate::command::{load_policy, parse_cni_args};
use crate::config::{NetworkConfigList, PluginConfig, check_name};
use crate::kernel::LinuxKernelFactory;
use crate::sandbox::Command;

/// The plugin directory searched in exec mode before `CNI_PATH`, unless
/// `CNIWASM_PLUGIN_PATH` names other directories.
pub const DEFAULT_PLUGIN_PATH: &str = "/opt/cniwasm/plugins";

/// One exec-protocol invocation, as read from the process.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// The plugin type named by the executable's file name; `None` when it
    /// is `cniwasm` itself, and then the configuration's `type` decides.
    pub invoked_as: Option<String>,
    /// The environment (only `CNI_*` and `CNIWASM_*` variables are read).
    pub environment: HashMap<String, String>,
    pub stdin: Vec<u8>,
}

impl ExecRequest {
    fn var(&self, name: &str) -> Option<&str> {
        self.environment
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }
}

/// Formats the text printed on stderr when the plugin runs without
/// `CNI_COMMAND`, as the reference plugins print theirs.
pub fn about(invoked_as: Option<&str>) -> String {
    format!(
        "CNI plugin {} (cniwasm {})\nCNI protocol versions supported: {}",
        invoked_as.unwrap_or("cniwasm"),
        env!("CARGO_PKG_VERSION"),
        SUPPORTED_VERSIONS.join(", ")
    )
}

/// Runs the request and returns what goes to stdout on success: the result
/// for ADD, the version object for VERSION, nothing otherwise.
pub fn run(request: &ExecRequest) -> Result<Option<String>, CniError> {
    let command = request
        .var("CNI_COMMAND")
        .ok_or_else(|| missing_variables(&["CNI_COMMAND"]))?;
    let command = match command {
        "ADD" => Command::Add,
        "DEL" => Command::Del,
        "CHECK" => Command::Check,
        "GC" => Command::Gc,
        "STATUS" => Command::Status,
        "VERSION" => return version(request).map(Some),
        other => {
            return Err(CniError::new(
                codes::INVALID_ENVIRONMENT_VARIABLES,
                format!("unknown CNI_COMMAND: {other}"),
            ));
        }
    };
    check_required_variables(request, command)?;

    let config = parse_stdin(&request.stdin)?;
    let list = single_plugin_list(request, &config)?;
    let attachment = attachment(request, command)?;
    let runtime = new_runtime(request)?;

    runtime
        .run_single(
            &list,
            &attachment,
            command,
            &String::from_utf8_lossy(&request.stdin),
        )
        .map_err(|error| error.to_cni_error())
}

fn missing_variables(names: &[&str]) -> CniError {
    CniError::new(
        codes::INVALID_ENVIRONMENT_VARIABLES,
        format!("required env variables [{}] missing", names.join(",")),
    )
}

/// Checks the variables the reference plugins require for each command.
fn check_required_variables(request: &ExecRequest, command: Command) -> Result<(), CniError> {
    let required: &[&str] = match command {
        Command::Add | Command::Check => {
            &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
        }
        Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
        Command::Gc | Command::Status => &["CNI_PATH"],
    };
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|name| request.var(name).is_none())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing_variables(&missing))
    }
}

fn parse_stdin(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    match serde_json::from_slice::<Value>(stdin) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(CniError::new(
            codes::DECODING_FAILURE,
            "invalid network configuration on stdin: expected a JSON object",
        )),
        Err(error) => Err(CniError::new(
            codes::DECODING_FAILURE,
            format!("invalid network configuration on stdin: {error}"),
        )),
    }
}

/// Wraps the configuration read on stdin as a one-plugin list, for the
/// runtime's loading, policy and audit.
fn single_plugin_list(
    request: &ExecRequest,
    config: &Map<String, Value>,
) -> Result<NetworkConfigList, CniError> {
    let name = config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(CniError::new(
            codes::INVALID_NETWORK_CONFIG,
            "missing network name",
        ));
    }
    check_name(&name).map_err(|reason| CniError::new(codes::INVALID_NETWORK_CONFIG, reason))?;

    let plugin_type = match &request.invoked_as {
        Some(name) => name.clone(),
        None => config
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    if plugin_type.is_empty() || plugin_type.contains('/') {
        return Err(CniError::new(
            codes::INVALID_NETWORK_CONFIG,
            format!("invalid plugin type {plugin_type:?}: expected a plain name such as bridge"),
        ));
    }

    Ok(NetworkConfigList {
        name,
        cni_version: config
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        disable_check: false,
        disable_gc: false,
        plugins: vec![PluginConfig {
            plugin_type,
            capabilities: Default::default(),
            raw: config.clone(),
        }],
        bytes: request.stdin.clone(),
        path: PathBuf::from("<stdin>"),
    })
}

fn attachment(request: &ExecRequest, command: Command) -> Result<Attachment, CniError> {
    let container_id = request
        .var("CNI_CONTAINERID")
        .unwrap_or_default()
        .to_string();
    if matches!(command, Command::Add | Command::Del | Command::Check) {
        check_name(&container_id).map_err(|reason| {
            CniError::new(
                codes::INVALID_ENVIRONMENT_VARIABLES,
                format!("invalid CNI_CONTAINERID: {reason}"),
            )
        })?;
    }
    let args = parse_cni_args(request.var("CNI_ARGS").unwrap_or(""))
        .map_err(|error| error.to_cni_error())?;

    Ok(Attachment {
        container_id,
        netns: request.var("CNI_NETNS").map(PathBuf::from),
        ifname: request.var("CNI_IFNAME").unwrap_or_default().to_string(),
        args,
        capability_args: Map::new(),
    })
}

fn new_runtime(request: &ExecRequest) -> Result<Runtime, CniError> {
    let mut plugin_path: Vec<PathBuf> = request
        .var("CNIWASM_PLUGIN_PATH")
        .unwrap_or(DEFAULT_PLUGIN_PATH)
        .split(':')
        .filter(|part| !part.is_empty())
        .map(PathBuf::from)
        .collect();
    plugin_path.extend(
        request
            .var("CNI_PATH")
            .unwrap_or("")
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
    );

    let mut policy = load_policy(request.var("CNIWASM_POLICY").map(std::path::Path::new))
        .map_err(|e| e.to_cni_error())?;
    // Native plugins never run in exec mode (see `wasm_only` below), so the
    // policy's setting does not matter here.
    policy.allow_native_plugins = false;
    let options = RuntimeOptions {
        plugin_path,
        cache_dir: PathBuf::from(request.var("CNIWASM_CACHE_DIR").unwrap_or("/var/lib/cni")),
        ipam_data_dir: PathBuf::from(
            request
                .var("CNIWASM_IPAM_DATA_DIR")
                .unwrap_or("/var/lib/cni/networks"),
        ),
        compile_cache: Some(PathBuf::from(
            request
                .var("CNIWASM_COMPILE_CACHE")
                .unwrap_or("/var/cache/cniwasm"),
        )),
        policy: Arc::new(policy),
        // A plugin type with no .wasm file would otherwise resolve to the link
        // that started this process, and run it again without end.
        wasm_only: true,
    };
    Runtime::new(options, Arc::new(LinuxKernelFactory)).map_err(|error| error.to_cni_error())
}

/// Returns the VERSION output: the plugin's own supported versions when the
/// plugin type is known, else every version cniwasm's results support.
fn version(request: &ExecRequest) -> Result<String, CniError> {
    let plugin_type = request.invoked_as.clone().or_else(|| {
        serde_json::from_slice::<Value>(&request.stdin)
            .ok()?
            .get("type")?
            .as_str()
            .map(str::to_string)
    });
    let versions = match plugin_type {
        Some(plugin_type) => new_runtime(request)?
            .supported_versions(&plugin_type)
            .map_err(|e| e.to_cni_error())?,
        None => SUPPORTED_VERSIONS.iter().map(|v| v.to_string()).collect(),
    };
    let newest = SUPPORTED_VERSIONS.last().expect("the list is not empty");
    Ok(json!({"cniVersion": newest, "supportedVersions": versions}).to_string())
}
