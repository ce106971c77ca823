//! Network configuration lists: finding one by name in a configuration
//! directory and validating it, with the lookup rules of the reference
//! library (libcni `LoadNetworkConf`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cniwasm_types::{CniError, codes};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no network configurations found in {}: add a .conflist file there or set NETCONFPATH", dir.display())]
    NoConfigurations { dir: PathBuf },
    #[error("no network configuration with name {name:?} in {}: check the name or NETCONFPATH", dir.display())]
    NetworkNotFound { name: String, dir: PathBuf },
    #[error("failed to read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid JSON in {}: {reason}", path.display())]
    Json { path: PathBuf, reason: String },
    #[error("invalid network configuration in {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

impl ConfigError {
    pub fn to_cni_error(&self) -> CniError {
        let code = match self {
            ConfigError::Read { .. } => codes::IO_FAILURE,
            ConfigError::Json { .. } => codes::DECODING_FAILURE,
            _ => codes::INVALID_NETWORK_CONFIG,
        };
        CniError::new(code, self.to_string())
    }
}

/// One plugin of a list: its `type`, the capabilities it declares, and its
/// configuration object exactly as written.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub plugin_type: String,
    pub capabilities: BTreeMap<String, bool>,
    pub raw: Map<String, Value>,
}

/// A network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<PluginConfig>,
    /// The file's bytes, stored in the result cache as libcni stores them.
    pub bytes: Vec<u8>,
    pub path: PathBuf,
}

/// Finds the network `name` in `dir`: first among `*.conflist` files, then
/// among single-plugin `*.conf` and `*.json` files, each group in name order.
/// As in libcni, a file that fails to parse ends the search with its error.
pub fn load_network(dir: &Path, name: &str) -> Result<NetworkConfigList, ConfigError> {
    let lists = files_with_extensions(dir, &["conflist"])?;
    let singles = files_with_extensions(dir, &["conf", "json"])?;
    if lists.is_empty() && singles.is_empty() {
        return Err(ConfigError::NoConfigurations {
            dir: dir.to_path_buf(),
        });
    }

    for path in &lists {
        let list = parse_list_file(path)?;
        if list.name == name {
            return Ok(list);
        }
    }

    for path in &singles {
        let list = parse_single_plugin_file(path)?;
        if list.name == name {
            return Ok(list);
        }
    }

    Err(ConfigError::NetworkNotFound {
        name: name.to_string(),
        dir: dir.to_path_buf(),
    })
}

/// Lists the regular files in `dir` with one of `extensions`, sorted by name.
/// A missing directory has no files.
fn files_with_extensions(dir: &Path, extensions: &[&str]) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };

    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ConfigError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let wanted = path
            .extension()
            .and_then(|extension| extension.to_str())
            .is_some_and(|extension| extensions.contains(&extension));
        if wanted && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_json_object(path: &Path) -> Result<(Vec<u8>, Map<String, Value>), ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|error| ConfigError::Json {
        path: path.to_path_buf(),
        reason: error.to_string(),
    })?;
    match value {
        Value::Object(object) => Ok((bytes, object)),
        _ => Err(ConfigError::Json {
            path: path.to_path_buf(),
            reason: "expected a JSON object".into(),
        }),
    }
}

pub fn parse_list_file(path: &Path) -> Result<NetworkConfigList, ConfigError> {
    let (bytes, object) = read_json_object(path)?;
    parse_list(path, bytes, &object)
}

/// Parses a list from an already decoded object.
pub fn parse_list(
    path: &Path,
    bytes: Vec<u8>,
    object: &Map<String, Value>,
) -> Result<NetworkConfigList, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        reason,
    };

    let name = string_field(object, "name")
        .map_err(&invalid)?
        .ok_or_else(|| invalid("missing \"name\"".into()))?;
    check_name(&name).map_err(&invalid)?;
    let cni_version = string_field(object, "cniVersion")
        .map_err(&invalid)?
        .unwrap_or_default();
    cniwasm_types::Version::parse(&cni_version).map_err(|error| invalid(error.to_string()))?;
    let disable_check = bool_field(object, "disableCheck").map_err(&invalid)?;
    let disable_gc = bool_field(object, "disableGC").map_err(&invalid)?;
    let cni_version =
        negotiate_version(&cni_version, object.get("cniVersions")).map_err(&invalid)?;

    let plugins = match object.get("plugins") {
        Some(Value::Array(plugins)) if plugins.is_empty() => {
            return Err(invalid("no plugins in list".into()));
        }
        Some(Value::Array(plugins)) => plugins,
        Some(_) => {
            return Err(invalid(
                "invalid \"plugins\": expected an array of plugin objects".into(),
            ));
        }
        None => {
            return Err(invalid(
                "missing \"plugins\": a network configuration list needs at least one plugin"
                    .into(),
            ));
        }
    };

    let mut parsed = Vec::with_capacity(plugins.len());
    for (index, plugin) in plugins.iter().enumerate() {
        parsed.push(
            parse_plugin(plugin).map_err(|reason| invalid(format!("plugin {index}: {reason}")))?,
        );
    }

    Ok(NetworkConfigList {
        name,
        cni_version,
        disable_check,
        disable_gc,
        plugins: parsed,
        bytes,
        path: path.to_path_buf(),
    })
}

/// Reads a single-plugin file (`.conf`, `.json`) as a list of one plugin.
fn parse_single_plugin_file(path: &Path) -> Result<NetworkConfigList, ConfigError> {
    let (bytes, object) = read_json_object(path)?;
    let invalid = |reason: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        reason,
    };

    let name = string_field(&object, "name")
        .map_err(&invalid)?
        .ok_or_else(|| invalid("missing \"name\"".into()))?;
    check_name(&name).map_err(&invalid)?;
    let cni_version = string_field(&object, "cniVersion")
        .map_err(&invalid)?
        .unwrap_or_default();
    let plugin = parse_plugin(&Value::Object(object.clone())).map_err(&invalid)?;

    Ok(NetworkConfigList {
        name,
        cni_version,
        disable_check: false,
        disable_gc: false,
        plugins: vec![plugin],
        bytes,
        path: path.to_path_buf(),
    })
}

fn parse_plugin(value: &Value) -> Result<PluginConfig, String> {
    let Value::Object(raw) = value else {
        return Err("expected a JSON object".into());
    };

    let plugin_type = match raw.get("type") {
        Some(Value::String(text)) if !text.is_empty() => text.clone(),
        Some(Value::String(_)) | None => {
            return Err("missing \"type\": name the plugin to run".into());
        }
        Some(_) => return Err("invalid \"type\": expected a string".into()),
    };
    if plugin_type.contains('/') || plugin_type.starts_with('.') {
        return Err(format!(
            "invalid plugin type {plugin_type:?}: expected a plain name without '/'"
        ));
    }

    let capabilities = match raw.get("capabilities") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(value) => serde_json::from_value(value.clone())
            .map_err(|_| "invalid \"capabilities\": expected an object of booleans such as {\"portMappings\": true}".to_string())?,
    };

    Ok(PluginConfig {
        plugin_type,
        capabilities,
        raw: raw.clone(),
    })
}

/// The newest CNI version cniwasm supports that the list offers
/// (`cniVersion` and `cniVersions` together), as the specification requires.
/// Without `cniVersions`, `cniVersion` is used as written.
fn negotiate_version(cni_version: &str, versions: Option<&Value>) -> Result<String, String> {
    let offered = match versions {
        None | Some(Value::Null) => return Ok(cni_version.to_string()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err("invalid \"cniVersions\": expected an array of version strings".into());
        }
    };

    let newest_supported = *cniwasm_types::SUPPORTED_VERSIONS
        .last()
        .expect("the list is not empty");
    let mut best: Option<String> = None;
    let candidates = offered
        .iter()
        .chain((!cni_version.is_empty()).then_some(&Value::Null));
    for item in candidates {
        let text = match item {
            Value::String(text) => text.as_str(),
            Value::Null => cni_version,
            _ => {
                return Err("invalid \"cniVersions\": expected an array of version strings".into());
            }
        };
        let parsed = cniwasm_types::Version::parse(text).map_err(|error| error.to_string())?;
        let supported =
            parsed <= cniwasm_types::Version::parse(newest_supported).expect("a valid constant");
        let better = best
            .as_deref()
            .is_none_or(|best| parsed > cniwasm_types::Version::parse(best).expect("checked"));
        if supported && better {
            best = Some(text.to_string());
        }
    }
    best.ok_or_else(|| format!("none of the offered versions {offered:?} is supported; cniwasm supports up to {newest_supported}"))
}

fn string_field(object: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(format!("invalid {key:?}: expected a string")),
    }
}

/// Reads a boolean that libcni also accepts as the string "true" or "false".
fn bool_field(object: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(flag)) => Ok(*flag),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(format!("invalid {key:?}: expected true or false")),
    }
}

/// Checks a network name or container id: non-empty, starting with a letter
/// or digit, then letters, digits, `_`, `.` and `-` (the reference rule).
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid_first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let valid_rest = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid_first && valid_rest {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: expected a letter or digit followed by letters, digits, '_', '.' or '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::write(dir.join(file), text).unwrap();
    }

    const LIST: &str = r#"{"cniVersion":"0.3.0","name":"mynet","plugins":[
        {"type":"bridge","bridge":"mynet"},
        {"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    #[test]
    fn finds_list_by_name() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "10-mynet.conflist", LIST);
        let list = load_network(dir.path(), "mynet").unwrap();
        assert_eq!(list.cni_version, "0.3.0");
        assert_eq!(list.plugins.len(), 2);
        assert_eq!(
            list.plugins[1].capabilities.get("portMappings"),
            Some(&true)
        );
        assert_eq!(list.bytes, LIST.as_bytes());
    }

    #[test]
    fn single_plugin_file_becomes_list() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "10-one.conf",
            r#"{"cniVersion":"0.4.0","name":"one","type":"loopback"}"#,
        );
        let list = load_network(dir.path(), "one").unwrap();
        assert_eq!(list.plugins[0].plugin_type, "loopback");
        assert_eq!(list.cni_version, "0.4.0");
    }

    #[test]
    fn unknown_network_names_the_name() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "10-mynet.conflist", LIST);
        let error = load_network(dir.path(), "other").unwrap_err();
        assert!(error.to_string().contains("\"other\""), "{error}");
        assert_eq!(error.to_cni_error().code, codes::INVALID_NETWORK_CONFIG);
    }

    #[test]
    fn empty_directory_has_no_configurations() {
        let dir = tempfile::tempdir().unwrap();
        let error = load_network(dir.path(), "mynet").unwrap_err();
        assert!(matches!(error, ConfigError::NoConfigurations { .. }));
    }

    #[test]
    fn invalid_json_is_decoding_failure() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "10-bad.conflist", "{\"name\": ");
        let error = load_network(dir.path(), "mynet").unwrap_err();
        assert_eq!(error.to_cni_error().code, codes::DECODING_FAILURE);
        assert!(error.to_string().contains("10-bad.conflist"), "{error}");
    }

    #[test]
    fn plugin_without_type_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "10-x.conflist",
            r#"{"name":"x","plugins":[{"bridge":"b"}]}"#,
        );
        let error = load_network(dir.path(), "x").unwrap_err();
        assert!(
            error.to_string().contains("plugin 0: missing \"type\""),
            "{error}"
        );
    }

    #[test]
    fn empty_plugin_list_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "10-x.conflist", r#"{"name":"x","plugins":[]}"#);
        assert!(
            load_network(dir.path(), "x")
                .unwrap_err()
                .to_string()
                .contains("no plugins")
        );
    }

    #[test]
    fn names_checked() {
        assert!(check_name("mynet").is_ok());
        assert!(check_name("cnitool-3b469ed4466ecfd8f00d").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("a/b").is_err());
    }

    #[test]
    fn cni_versions_pick_highest_supported() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "1.conflist",
            r#"{"name":"x","cniVersion":"0.4.0","cniVersions":["1.0.0","9.9.9","0.3.1"],"plugins":[{"type":"a"}]}"#,
        );
        assert_eq!(load_network(dir.path(), "x").unwrap().cni_version, "1.0.0");
    }

    #[test]
    fn cni_versions_without_supported_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "1.conflist",
            r#"{"name":"x","cniVersions":["9.0.0"],"plugins":[{"type":"a"}]}"#,
        );
        let error = load_network(dir.path(), "x").unwrap_err();
        assert!(error.to_string().contains("9.0.0"), "{error}");
    }

    #[test]
    fn disable_check_accepts_strings() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "1.conflist",
            r#"{"name":"x","disableCheck":"TRUE","plugins":[{"type":"a"}]}"#,
        );
        assert!(load_network(dir.path(), "x").unwrap().disable_check);
    }
}
