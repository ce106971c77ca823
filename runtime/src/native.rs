//! Native CNI plugins in a chain: a plugin type with no `.wasm` file runs
//! as the executable of that name, through the exec protocol as libcni runs
//! it, when the policy allows native plugins. It runs outside the sandbox,
//! in the runtime's own network namespace.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use cniwasm_host_api::plugin_host::cniwasm::host::types;
use cniwasm_types::CniError;

use crate::sandbox::{Command, PluginError};

/// Parameters of [`call_native`].
pub(crate) struct NativeCall<'a> {
    pub path: &'a Path,
    pub plugin_type: &'a str,
    pub command: Command,
    pub invocation: &'a types::Invocation,
    /// The directories passed as `CNI_PATH`, for the plugin's own delegation.
    pub search_path: &'a [PathBuf],
    pub config: &'a str,
}

/// Runs the executable; returns its stdout for ADD.
pub(crate) fn call_native(call: &NativeCall<'_>) -> Result<Option<String>, PluginError> {
    let failed = |reason: String| PluginError::Cni {
        plugin: call.plugin_type.to_string(),
        error: CniError::new(cniwasm_types::codes::INTERNAL, reason),
    };

    let args: Vec<String> = call
        .invocation
        .args
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let search_path: Vec<String> = call
        .search_path
        .iter()
        .map(|dir| dir.display().to_string())
        .collect();
    let mut child = Process::new(call.path)
        .env("CNI_COMMAND", call.command.as_str())
        .env("CNI_CONTAINERID", &call.invocation.container_id)
        .env("CNI_NETNS", call.invocation.netns.as_deref().unwrap_or(""))
        .env("CNI_IFNAME", &call.invocation.ifname)
        .env("CNI_ARGS", args.join(";"))
        .env("CNI_PATH", search_path.join(":"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| {
            failed(format!(
                "failed to start native plugin {}: {error}",
                call.path.display()
            ))
        })?;

    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(call.config.as_bytes())
        .map_err(|error| {
            failed(format!(
                "failed to write the configuration to {}: {error}",
                call.path.display()
            ))
        })?;
    let output = child.wait_with_output().map_err(|error| {
        failed(format!(
            "failed to wait for {}: {error}",
            call.path.display()
        ))
    })?;

    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !stderr.trim().is_empty() {
        tracing::debug!(plugin = call.plugin_type, stderr = %stderr.trim_end(), "native plugin stderr");
    }
    if output.status.success() {
        return Ok((call.command == Command::Add).then_some(stdout));
    }

    // The error object is on stdout; without one, libcni falls back to stderr.
    match serde_json::from_str::<CniError>(&stdout) {
        Ok(error) => Err(PluginError::Cni {
            plugin: call.plugin_type.to_string(),
            error,
        }),
        Err(_) if !stdout.trim().is_empty() => Err(failed(format!(
            "netplugin failed but error parsing its diagnostic message {:?}: {}",
            stdout.trim(),
            output.status
        ))),
        Err(_) if !stderr.trim().is_empty() => Err(failed(format!(
            "netplugin failed: {:?}: {}",
            stderr.trim(),
            output.status
        ))),
        Err(_) => Err(failed(format!(
            "netplugin failed with no error message: {}",
            output.status
        ))),
    }
}
