//! Runs the reference CNI plugins (Debian's `containernetworking-plugins`,
//! installed in /usr/lib/cni) through the exec protocol as libcni does: the
//! plugin's config on stdin with `name`, `cniVersion`, `prevResult` and
//! `runtimeConfig` injected, the `CNI_*` variables in the environment, the
//! result on stdout.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{Map, Value};

use crate::Netns;

/// Where Debian installs the reference plugins.
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// One attachment driven through the reference plugins.
pub struct ReferenceRun<'a> {
    /// The namespace the plugins run in (the test's host namespace).
    pub host: &'a Netns,
    pub list: &'a Value,
    pub container_id: &'a str,
    pub netns_path: &'a str,
    pub ifname: &'a str,
    pub capability_args: &'a Map<String, Value>,
    /// Directory of plugin executables; [`REFERENCE_PLUGIN_DIR`] for the
    /// reference plugins.
    pub plugin_dir: &'a str,
    /// Extra environment for every plugin process; it may set `CNI_ARGS`.
    pub extra_env: &'a [(&'a str, &'a str)],
}

/// The capability arguments of a run that passes none.
static NO_CAPABILITY_ARGS: std::sync::LazyLock<Map<String, Value>> =
    std::sync::LazyLock::new(Map::new);

impl<'a> ReferenceRun<'a> {
    /// Builds a run of the reference plugins in [`REFERENCE_PLUGIN_DIR`] for
    /// `eth0`, without capability arguments or extra environment.
    pub fn plain(
        host: &'a Netns,
        list: &'a Value,
        container_id: &'a str,
        netns_path: &'a str,
    ) -> Self {
        Self {
            host,
            list,
            container_id,
            netns_path,
            ifname: "eth0",
            capability_args: &NO_CAPABILITY_ARGS,
            plugin_dir: REFERENCE_PLUGIN_DIR,
            extra_env: &[],
        }
    }
}

impl ReferenceRun<'_> {
    /// Runs ADD through every plugin in order; returns the final result.
    pub fn add(&self) -> Result<Value, String> {
        let mut previous = None;
        for plugin in self.plugins() {
            let output = self.exec("ADD", plugin, previous.as_ref())?;
            previous = Some(
                serde_json::from_str(&output)
                    .map_err(|error| format!("invalid result: {error}: {output}"))?,
            );
        }
        previous.ok_or_else(|| "the list has no plugins".to_string())
    }

    /// Runs CHECK through every plugin in order with `result` as prevResult.
    pub fn check(&self, result: &Value) -> Result<(), String> {
        for plugin in self.plugins() {
            self.exec("CHECK", plugin, Some(result))?;
        }
        Ok(())
    }

    /// Runs DEL through every plugin in reverse, with `result` as prevResult
    /// for lists of version 0.4.0 and later.
    pub fn del(&self, result: Option<&Value>) -> Result<(), String> {
        let version = self.list["cniVersion"].as_str().unwrap_or("");
        let previous = result.filter(|_| {
            !version.starts_with("0.3")
                && !version.starts_with("0.1")
                && !version.starts_with("0.2")
        });
        for plugin in self.plugins().iter().rev() {
            self.exec("DEL", plugin, previous)?;
        }
        Ok(())
    }

    fn plugins(&self) -> Vec<&Value> {
        self.list["plugins"]
            .as_array()
            .expect("a conflist has plugins")
            .iter()
            .collect()
    }

    fn exec(
        &self,
        command: &str,
        plugin: &Value,
        previous: Option<&Value>,
    ) -> Result<String, String> {
        let plugin_type = plugin["type"].as_str().expect("plugins have a type");
        let config = self.inject(plugin, previous);

        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.host.name])
            .arg(format!("{}/{plugin_type}", self.plugin_dir))
            // CNI_ARGS first, so that `extra_env` can set it.
            .env("CNI_ARGS", "")
            .envs(self.extra_env.iter().copied())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_NETNS", self.netns_path)
            .env("CNI_IFNAME", self.ifname)
            .env("CNI_PATH", self.plugin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("failed to start reference {plugin_type}: {error}"))?;
        // A plugin that rejects its environment may exit before it reads
        // stdin, and its exit status then reports what happened.
        let written = child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(config.as_bytes());
        match written {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(format!("failed to write config to {plugin_type}: {error}"));
            }
            _ => {}
        }
        let output = child
            .wait_with_output()
            .map_err(|error| format!("failed to wait for {plugin_type}: {error}"))?;

        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "reference {plugin_type} {command} failed: {stdout} {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    fn inject(&self, plugin: &Value, previous: Option<&Value>) -> String {
        let mut config = plugin.as_object().expect("plugins are objects").clone();
        config.insert("name".into(), self.list["name"].clone());
        config.insert("cniVersion".into(), self.list["cniVersion"].clone());
        if let Some(previous) = previous {
            config.insert("prevResult".into(), previous.clone());
        }

        let runtime_config: Map<String, Value> = plugin["capabilities"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, enabled)| enabled.as_bool() == Some(true))
            .filter_map(|(name, _)| {
                self.capability_args
                    .get(name)
                    .map(|value| (name.clone(), value.clone()))
            })
            .collect();
        if !runtime_config.is_empty() {
            config.insert("runtimeConfig".into(), Value::Object(runtime_config));
        }
        serde_json::to_string(&config).expect("JSON serialises")
    }
}
