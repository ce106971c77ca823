//! The reference-plugin driver: runs the executables in /usr/lib/cni through
//! the CNI exec protocol as libcni 1.1 does. It runs as its own process inside
//! the path's host namespace, so each operation pays one `ip netns exec` as
//! the cniwasm CLI does, and the plugins it starts inherit the namespace.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::{Map, Value};

/// Where Debian's containernetworking-plugins package installs the plugins.
pub const PLUGIN_DIR: &str = "/usr/lib/cni";

/// One attachment, as libcni's `RuntimeConf` describes it.
pub struct Attachment {
    pub conflist: PathBuf,
    pub capability_args: PathBuf,
    pub netns: String,
    pub container_id: String,
    /// Written to `ipam.dataDir` of every plugin that has an `ipam` section.
    pub ipam_data_dir: PathBuf,
    /// The final ADD result, kept as libcni keeps it in its cache.
    pub result_file: PathBuf,
}

/// Runs ADD through every plugin in order and stores the final result.
pub fn add(attachment: &Attachment) -> anyhow::Result<()> {
    let list = read_json(&attachment.conflist)?;
    let capability_args = read_json(&attachment.capability_args)?;

    let mut previous: Option<Value> = None;
    for plugin in plugins(&list)? {
        let config = inject(
            &list,
            plugin,
            previous.as_ref(),
            &capability_args,
            attachment,
        );
        let output = exec(attachment, "ADD", plugin, &config)?;
        let result = serde_json::from_str(&output)
            .with_context(|| format!("invalid result from {}: {output}", plugin["type"]))?;
        previous = Some(result);
    }

    let result = previous.context("the list has no plugins")?;
    std::fs::write(&attachment.result_file, result.to_string())
        .with_context(|| format!("failed to write {}", attachment.result_file.display()))
}

/// Runs DEL through every plugin in reverse order. The cached result is
/// `prevResult` only from cniVersion 0.4.0 on, as in libcni.
pub fn del(attachment: &Attachment) -> anyhow::Result<()> {
    let list = read_json(&attachment.conflist)?;
    let capability_args = read_json(&attachment.capability_args)?;
    let version = list["cniVersion"].as_str().unwrap_or("");
    let cached = match std::fs::read_to_string(&attachment.result_file) {
        Ok(text) => Some(serde_json::from_str::<Value>(&text)?),
        Err(_) => None,
    };
    let previous = cached.filter(|_| !matches!(version, "0.1.0" | "0.2.0" | "0.3.0" | "0.3.1"));

    for plugin in plugins(&list)?.iter().rev() {
        let config = inject(
            &list,
            plugin,
            previous.as_ref(),
            &capability_args,
            attachment,
        );
        exec(attachment, "DEL", plugin, &config)?;
    }
    let _ = std::fs::remove_file(&attachment.result_file);
    Ok(())
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("invalid JSON in {}", path.display()))
}

fn plugins(list: &Value) -> anyhow::Result<&Vec<Value>> {
    list["plugins"]
        .as_array()
        .context("the configuration list has no plugins array")
}

/// Runs one plugin executable with the configuration on stdin; returns stdout.
fn exec(
    attachment: &Attachment,
    command: &str,
    plugin: &Value,
    config: &str,
) -> anyhow::Result<String> {
    let plugin_type = plugin["type"].as_str().context("a plugin has no type")?;
    let mut child = Command::new(format!("{PLUGIN_DIR}/{plugin_type}"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &attachment.container_id)
        .env("CNI_NETNS", &attachment.netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_ARGS", "")
        .env("CNI_PATH", PLUGIN_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start reference {plugin_type}"))?;

    // Dropping stdin after the write closes the pipe, so the plugin reads EOF.
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(config.as_bytes())
        .with_context(|| format!("failed to write the configuration to {plugin_type}"))?;
    let output = child.wait_with_output()?;

    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "reference {plugin_type} {command} failed with {}: {stdout} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout)
}

/// The plugin's configuration with `name`, `cniVersion`, `prevResult` and the
/// `runtimeConfig` of its enabled capabilities, as libcni builds it.
fn inject(
    list: &Value,
    plugin: &Value,
    previous: Option<&Value>,
    capability_args: &Value,
    attachment: &Attachment,
) -> String {
    let mut config = plugin.as_object().cloned().unwrap_or_default();
    config.insert("name".into(), list["name"].clone());
    config.insert("cniVersion".into(), list["cniVersion"].clone());
    if let Some(previous) = previous {
        config.insert("prevResult".into(), previous.clone());
    }
    if let Some(Value::Object(ipam)) = config.get_mut("ipam") {
        let data_dir = attachment.ipam_data_dir.display().to_string();
        ipam.insert("dataDir".into(), Value::String(data_dir));
    }

    let enabled = plugin["capabilities"].as_object().into_iter().flatten();
    let runtime_config: Map<String, Value> = enabled
        .filter(|(_, on)| on.as_bool() == Some(true))
        .filter_map(|(name, _)| Some((name.clone(), capability_args.get(name)?.clone())))
        .collect();
    if !runtime_config.is_empty() {
        config.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    Value::Object(config).to_string()
}
