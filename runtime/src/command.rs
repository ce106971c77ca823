//! The commands of the `cniwasm` CLI, which is a drop-in for `cnitool`: the
//! same arguments and environment, one function per command.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cniwasm_types::{codes, print_json};
use serde_json::{Map, Value};
use sha2::{Digest, Sha512};

use crate::chain::{Attachment, Runtime, RuntimeOptions};
use crate::config::load_network;
use crate::error::Error;
use crate::kernel::LinuxKernelFactory;
use cniwasm_host_api::policy::Policy;

/// Everything a command needs, as the CLI gathered it from arguments and
/// environment.
#[derive(Debug, Clone)]
pub struct CommandOptions {
    pub network: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// Configuration directory (`NETCONFPATH`).
    pub netconf_path: PathBuf,
    /// Plugin search path (`CNI_PATH`, colon-separated).
    pub cni_path: String,
    /// `CNI_ARGS` as given: `K1=V1;K2=V2`.
    pub cni_args: Option<String>,
    /// `CAP_ARGS` as given: a JSON object.
    pub cap_args: Option<String>,
    pub cache_dir: PathBuf,
    pub ipam_data_dir: PathBuf,
    pub compile_cache: Option<PathBuf>,
    /// Directories of installed plugins (`CNIWASM_PLUGIN_PATH`), searched
    /// after `CNI_PATH`.
    pub plugin_path: String,
    /// The policy file given with `--policy` or `CNIWASM_POLICY`; `None`
    /// reads [`DEFAULT_POLICY_PATH`] when it exists.
    pub policy: Option<PathBuf>,
}

/// The policy path read when none is named.
pub const DEFAULT_POLICY_PATH: &str = "/etc/cniwasm/policy.json";

/// Reads the policy: the named file, which must exist, or the default path,
/// or the built-in policy when the default path has no file.
pub fn load_policy(named: Option<&Path>) -> Result<Policy, Error> {
    let path = named.unwrap_or(Path::new(DEFAULT_POLICY_PATH));
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && named.is_none() => {
            return Ok(Policy::default());
        }
        Err(error) => {
            return Err(Error::Policy {
                path: path.display().to_string(),
                reason: error.to_string(),
            });
        }
    };
    Policy::from_json(&text).map_err(|error| Error::Policy {
        path: path.display().to_string(),
        reason: error.to_string(),
    })
}

/// Runs ADD and returns the result, printed as cnitool prints it.
pub fn add(options: &CommandOptions) -> Result<String, Error> {
    let (runtime, attachment) = prepare(options)?;
    let list = load_network(&options.netconf_path, &options.network)?;
    let result = runtime.add(&list, &attachment)?;
    Ok(print_json(&result))
}

pub fn del(options: &CommandOptions) -> Result<(), Error> {
    let (runtime, attachment) = prepare(options)?;
    let list = load_network(&options.netconf_path, &options.network)?;
    runtime.del(&list, &attachment)
}

pub fn check(options: &CommandOptions) -> Result<(), Error> {
    let (runtime, attachment) = prepare(options)?;
    let list = load_network(&options.netconf_path, &options.network)?;
    runtime.check(&list, &attachment)
}

/// Runs GC: every cached attachment of the network that `valid` does not
/// list (`CONTAINERID/IFNAME` each) is deleted, then plugin GC runs for lists
/// of version 1.1.0 and later. With `valid` empty every cached attachment is
/// deleted, as cnitool does. The namespace path is not used.
pub fn gc(options: &CommandOptions, valid: &[String]) -> Result<(), Error> {
    let valid = valid
        .iter()
        .map(|entry| match entry.split_once('/') {
            Some((id, ifname)) if !id.is_empty() && !ifname.is_empty() => Ok((id.to_string(), ifname.to_string())),
            _ => Err(Error::invalid(
                codes::INVALID_ENVIRONMENT_VARIABLES,
                format!("invalid --valid {entry:?}: expected CONTAINERID/IFNAME such as cnitool-296747069b8a02dc4e2a/eth0"),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;

    let runtime = new_runtime(options)?;
    let list = load_network(&options.netconf_path, &options.network)?;
    runtime.gc(&list, (!valid.is_empty()).then_some(valid.as_slice()))
}

/// Runs STATUS on every plugin of the network (lists of version 1.1.0 and
/// later; older lists succeed at once).
pub fn status(options: &CommandOptions) -> Result<(), Error> {
    let runtime = new_runtime(options)?;
    let list = load_network(&options.netconf_path, &options.network)?;
    runtime.status(&list)
}

fn prepare(options: &CommandOptions) -> Result<(Runtime, Attachment), Error> {
    if options.netns.as_os_str().is_empty() {
        return Err(Error::invalid(
            codes::INVALID_ENVIRONMENT_VARIABLES,
            "missing network namespace path: pass NETNS, such as /var/run/netns/NAME",
        ));
    }
    let netns = std::path::absolute(&options.netns).map_err(|error| {
        Error::invalid(
            codes::INVALID_ENVIRONMENT_VARIABLES,
            format!(
                "invalid network namespace path {}: {error}",
                options.netns.display()
            ),
        )
    })?;

    let attachment = Attachment {
        container_id: container_id_for(&netns),
        netns: Some(netns),
        ifname: options.ifname.clone(),
        args: parse_cni_args(options.cni_args.as_deref().unwrap_or(""))?,
        capability_args: parse_cap_args(options.cap_args.as_deref())?,
    };

    Ok((new_runtime(options)?, attachment))
}

fn new_runtime(options: &CommandOptions) -> Result<Runtime, Error> {
    let runtime_options = RuntimeOptions {
        // The CLI also searches where `cniwasm install` puts plugins, so a
        // type whose link is on CNI_PATH runs its wasm file, not the link.
        plugin_path: split_path(&format!("{}:{}", options.cni_path, options.plugin_path)),
        cache_dir: options.cache_dir.clone(),
        ipam_data_dir: options.ipam_data_dir.clone(),
        compile_cache: options.compile_cache.clone(),
        policy: Arc::new(load_policy(options.policy.as_deref())?),
        wasm_only: false,
    };
    Runtime::new(runtime_options, Arc::new(LinuxKernelFactory))
}

/// Derives the container id from the namespace path as cnitool does:
/// `cnitool-` and the first 20 hex digits of the SHA-512 of the path.
pub fn container_id_for(netns: &Path) -> String {
    let digest = Sha512::digest(netns.as_os_str().as_encoded_bytes());
    format!("cnitool-{}", &hex::encode(digest)[..20])
}

fn split_path(path: &str) -> Vec<PathBuf> {
    path.split(':')
        .filter(|part| !part.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Parses `K1=V1;K2=V2` strictly: every pair needs one `=`, a key and a value.
pub fn parse_cni_args(text: &str) -> Result<Vec<(String, String)>, Error> {
    if text.is_empty() {
        return Ok(Vec::new());
    }

    text.split(';')
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() && !value.is_empty() && !value.contains('=') => {
                Ok((key.to_string(), value.to_string()))
            }
            _ => Err(Error::invalid(
                codes::INVALID_ENVIRONMENT_VARIABLES,
                format!(
                    "invalid CNI_ARGS pair {pair:?}: expected KEY=VALUE pairs separated by ';'"
                ),
            )),
        })
        .collect()
}

/// Parses `CAP_ARGS`, a JSON object of capability arguments.
pub fn parse_cap_args(text: Option<&str>) -> Result<Map<String, Value>, Error> {
    let Some(text) = text.filter(|text| !text.trim().is_empty()) else {
        return Ok(Map::new());
    };

    let invalid = |reason: String| {
        Error::invalid(
            codes::DECODING_FAILURE,
            format!(
                "invalid CAP_ARGS {text:?}: {reason}; expected a JSON object such as {{\"portMappings\": [...]}}"
            ),
        )
    };
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(invalid("not a JSON object".into())),
        Err(error) => Err(invalid(error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_matches_cnitool() {
        assert_eq!(
            container_id_for(Path::new("/var/run/netns/blue")),
            "cnitool-296747069b8a02dc4e2a"
        );
        assert_eq!(
            container_id_for(Path::new("/var/run/netns/seedref")),
            "cnitool-3b469ed4466ecfd8f00d"
        );
    }

    #[test]
    fn cni_args_pairs() {
        let args = parse_cni_args("IP=10.0.0.2;K8S_POD_NAME=web").unwrap();
        assert_eq!(
            args,
            vec![
                ("IP".into(), "10.0.0.2".into()),
                ("K8S_POD_NAME".into(), "web".into())
            ]
        );
    }

    #[test]
    fn cni_args_rejects_bad_pairs() {
        for bad in ["IP", "=x", "IP=", "A=B=C", "A=1;;B=2"] {
            let error = parse_cni_args(bad).unwrap_err();
            assert_eq!(
                error.to_cni_error().code,
                codes::INVALID_ENVIRONMENT_VARIABLES,
                "{bad}"
            );
        }
    }

    #[test]
    fn cap_args_must_be_object() {
        assert!(
            parse_cap_args(Some("{\"portMappings\": []}"))
                .unwrap()
                .contains_key("portMappings")
        );
        let error = parse_cap_args(Some("[1,2")).unwrap_err();
        assert_eq!(error.to_cni_error().code, codes::DECODING_FAILURE);
        assert!(error.to_string().contains("[1,2"), "{error}");
        assert!(parse_cap_args(Some("42")).is_err());
        assert!(parse_cap_args(None).unwrap().is_empty());
    }
}

/// The report of `cniwasm inspect` on a plugin file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginReport {
    pub path: String,
    pub plugin_type: String,
    pub digest: String,
    pub exports: Vec<String>,
    pub host_imports: Vec<String>,
    /// `admitted`, or why the policy rejects the plugin before it runs.
    pub admission: String,
    /// The policy entry's settings, as text.
    pub policy: String,
}

/// Inspects a plugin file against the policy. Its type is the file name
/// without `.wasm`, as plugin lookup on `CNI_PATH` names it.
pub fn inspect(path: &Path, policy_path: Option<&Path>) -> Result<PluginReport, Error> {
    let policy = load_policy(policy_path)?;
    let engine = crate::engine::PluginEngine::new(None)?;
    let plugin = engine.load(path)?;
    let plugin_type = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let entry = policy.for_plugin(&plugin_type);

    let context = cniwasm_host_api::audit::AuditContext::default();
    let admission = match crate::admission::admit(
        &engine,
        &plugin_type,
        &plugin,
        entry,
        (&cniwasm_host_api::audit::AuditLog::disabled(), &context),
    ) {
        Ok(()) => "admitted".to_string(),
        Err(error) => error.to_string(),
    };

    Ok(PluginReport {
        path: path.display().to_string(),
        plugin_type,
        digest: format!("sha256:{}", plugin.digest),
        exports: crate::engine::exports(engine.engine(), &plugin.component),
        host_imports: crate::engine::host_imports(engine.engine(), &plugin.component),
        admission,
        policy: describe_policy(entry),
    })
}

fn describe_policy(entry: &cniwasm_host_api::policy::PluginPolicy) -> String {
    let imports = match &entry.imports {
        Some(imports) => imports.iter().cloned().collect::<Vec<_>>().join(", "),
        None => "all host interfaces".to_string(),
    };
    let sections = [
        ("links", entry.links.is_some()),
        ("addresses", entry.addresses.is_some()),
        ("routes", entry.routes.is_some()),
        ("sysctls", entry.sysctls.is_some()),
        ("portMappings", entry.port_mappings.is_some()),
        ("masquerade", entry.masquerade.is_some()),
        ("resolvConf", entry.resolv_conf.is_some()),
    ];
    let restricted: Vec<&str> = sections
        .iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| *name)
        .collect();
    let limits = &entry.limits;
    format!(
        "mode {}; imports: {imports}; restricted sections: {}; IPAM state directory: {}; limits: {} bytes of memory, {} ms, {} host calls, {} result bytes",
        match entry.mode {
            cniwasm_host_api::policy::Mode::Enforce => "enforce",
            cniwasm_host_api::policy::Mode::Audit => "audit",
        },
        if restricted.is_empty() {
            "none (ownership rules only)".to_string()
        } else {
            restricted.join(", ")
        },
        if entry.ipam_state {
            "granted"
        } else {
            "withheld"
        },
        limits.memory_bytes,
        limits.deadline_ms,
        limits.max_host_calls,
        limits.max_result_bytes,
    )
}

/// Filters for `cniwasm audit`; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub container: Option<String>,
    pub plugin: Option<String>,
    pub decision: Option<String>,
}

/// Reads the audit log and returns its records that pass `filter`, one
/// line of text each. The log is the one named, or the policy's.
pub fn audit(
    file: Option<&Path>,
    policy_path: Option<&Path>,
    filter: &AuditFilter,
) -> Result<Vec<String>, Error> {
    if let Some(decision) = &filter.decision
        && !["allow", "deny", "would-deny"].contains(&decision.as_str())
    {
        return Err(Error::invalid(
            codes::INVALID_ENVIRONMENT_VARIABLES,
            format!("invalid --decision {decision:?}: expected allow, deny or would-deny"),
        ));
    }
    let path = match file {
        Some(path) => path.to_path_buf(),
        None => load_policy(policy_path)?.audit_log.ok_or_else(|| {
            Error::invalid(
                codes::INVALID_ENVIRONMENT_VARIABLES,
                "the policy sets no auditLog: name the audit log with --file",
            )
        })?,
    };
    let text = std::fs::read_to_string(&path).map_err(|error| {
        Error::invalid(
            codes::IO_FAILURE,
            format!("failed to read audit log {}: {error}", path.display()),
        )
    })?;

    let field = |record: &Value, key: &str| {
        record
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let mut lines = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let Ok(record) = serde_json::from_str::<Value>(line) else {
            lines.push(format!("(unparsable record) {line}"));
            continue;
        };
        let wanted = filter
            .container
            .as_ref()
            .is_none_or(|c| &field(&record, "containerId") == c)
            && filter
                .plugin
                .as_ref()
                .is_none_or(|p| &field(&record, "plugin") == p)
            && filter
                .decision
                .as_ref()
                .is_none_or(|d| &field(&record, "decision") == d);
        if wanted {
            lines.push(format_audit_record(&record, &field));
        }
    }
    Ok(lines)
}

fn format_audit_record(record: &Value, field: &dyn Fn(&Value, &str) -> String) -> String {
    let head = format!(
        "{} {} {} {} {}",
        field(record, "time"),
        field(record, "command"),
        field(record, "containerId"),
        field(record, "ifname"),
        field(record, "plugin"),
    );
    if field(record, "kind") == "plugin-call" {
        let number = |key: &str| record.get(key).and_then(Value::as_u64).unwrap_or(0);
        format!(
            "{head} plugin-call outcome={} host_calls={} denials={} would_denials={} wall_us={} peak_memory={} {}",
            field(record, "outcome"),
            number("hostCalls"),
            number("denials"),
            number("wouldDenials"),
            number("wallTimeUs"),
            number("peakMemoryBytes"),
            field(record, "message"),
        )
    } else {
        format!(
            "{head} {} {} decision={} rule={} outcome={}",
            field(record, "operation"),
            record
                .get("arguments")
                .map(Value::to_string)
                .unwrap_or_default(),
            field(record, "decision"),
            field(record, "rule"),
            field(record, "outcome"),
        )
    }
}

/// Parameters of [`install`].
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub plugins: Vec<PathBuf>,
    /// Directory for the `.wasm` files, which exec mode searches first.
    pub plugin_dir: PathBuf,
    /// The CNI bin directory that container runtimes search.
    pub bin_dir: PathBuf,
    /// The binary the links point at: this `cniwasm`.
    pub binary: PathBuf,
    pub compile_cache: Option<PathBuf>,
    /// Replace existing files in `bin_dir`, native plugins included.
    pub force: bool,
}

/// Installs wasm plugins: copies each to `<plugin dir>/<type>.wasm`,
/// compiles it into the compile cache, and links `<bin dir>/<type>` to
/// cniwasm so container runtimes run it as a CNI plugin. Refuses to replace
/// a file in the bin directory that is not already such a link, unless
/// `force` is set. Returns one line per plugin.
pub fn install(options: &InstallOptions) -> Result<Vec<String>, Error> {
    let options = &InstallOptions {
        plugin_dir: first_directory(&options.plugin_dir),
        ..options.clone()
    };
    let io_error = |action: String, error: std::io::Error| {
        Error::invalid(codes::IO_FAILURE, format!("failed to {action}: {error}"))
    };
    let engine = crate::engine::PluginEngine::new(options.compile_cache.clone())?;
    std::fs::create_dir_all(&options.plugin_dir)
        .map_err(|e| io_error(format!("create {}", options.plugin_dir.display()), e))?;
    std::fs::create_dir_all(&options.bin_dir)
        .map_err(|e| io_error(format!("create {}", options.bin_dir.display()), e))?;

    // 1. Check every plugin before changing anything: its name, that it
    // compiles, and that its link may be written. A bad file then leaves the
    // installed plugins as they were.
    let mut checked = Vec::with_capacity(options.plugins.len());
    for source in &options.plugins {
        let plugin_type = plugin_type_of(source)?;
        let link = options.bin_dir.join(&plugin_type);
        check_link_target(&link, &options.binary, options.force)?;
        let loaded = engine.load(source)?;
        checked.push((source, plugin_type, link, loaded.digest));
    }

    // 2. Copy each file in through a temporary name and a rename, so a
    // runtime never loads a half-written plugin, then link it.
    let mut lines = Vec::new();
    for (source, plugin_type, link, digest) in checked {
        let target = options.plugin_dir.join(format!("{plugin_type}.wasm"));
        let staged = options.plugin_dir.join(format!(".{plugin_type}.wasm.new"));
        std::fs::copy(source, &staged)
            .and_then(|_| std::fs::rename(&staged, &target))
            .map_err(|e| {
                io_error(
                    format!("copy {} to {}", source.display(), target.display()),
                    e,
                )
            })?;

        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link)
                .map_err(|e| io_error(format!("replace {}", link.display()), e))?;
        }
        std::os::unix::fs::symlink(&options.binary, &link).map_err(|e| {
            io_error(
                format!("link {} to {}", link.display(), options.binary.display()),
                e,
            )
        })?;
        lines.push(format!(
            "{plugin_type}: {} sha256:{digest} -> {}",
            target.display(),
            link.display()
        ));
    }
    Ok(lines)
}

/// The first directory of a colon-separated list such as
/// `CNIWASM_PLUGIN_PATH`, where `install` puts plugins.
fn first_directory(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    PathBuf::from(text.split(':').find(|part| !part.is_empty()).unwrap_or("."))
}

fn plugin_type_of(path: &Path) -> Result<String, Error> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.strip_suffix(".wasm") {
        Some(plugin_type) if !plugin_type.is_empty() => Ok(plugin_type.to_string()),
        _ => Err(Error::invalid(
            codes::INVALID_NETWORK_CONFIG,
            format!(
                "invalid plugin file {}: expected <type>.wasm, such as bridge.wasm",
                path.display()
            ),
        )),
    }
}

/// Accepts a missing file or a link to `binary`; anything else (such as a
/// native plugin) only with `force`.
fn check_link_target(link: &Path, binary: &Path, force: bool) -> Result<(), Error> {
    let Ok(metadata) = link.symlink_metadata() else {
        return Ok(());
    };
    let ours = metadata.file_type().is_symlink()
        && std::fs::read_link(link).is_ok_and(|target| target == binary);
    if ours || force {
        return Ok(());
    }
    Err(Error::invalid(
        codes::IO_FAILURE,
        format!(
            "{} exists and is not a link to {}: it may be a native plugin; remove it or pass --force to replace it",
            link.display(),
            binary.display()
        ),
    ))
}

/// Lists the plugins installed in `plugin_dir`: digest, whether `bin_dir`
/// links the type to cniwasm, and whether the policy admits the plugin.
pub fn list_plugins(
    plugin_dir: &Path,
    bin_dir: &Path,
    policy_path: Option<&Path>,
) -> Result<Vec<String>, Error> {
    let plugin_dir = &first_directory(plugin_dir);
    let entries = std::fs::read_dir(plugin_dir).map_err(|error| {
        Error::invalid(
            codes::IO_FAILURE,
            format!(
                "failed to read plugin directory {}: {error}",
                plugin_dir.display()
            ),
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "wasm")
        })
        .collect();
    paths.sort();

    let mut lines = Vec::new();
    for path in paths {
        let report = inspect(&path, policy_path)?;
        let link = bin_dir.join(&report.plugin_type);
        let linked = match std::fs::read_link(&link) {
            Ok(target) => format!("linked from {} -> {}", link.display(), target.display()),
            Err(_) if link.exists() => format!("{} is another executable", link.display()),
            Err(_) => format!("not linked in {}", bin_dir.display()),
        };
        lines.push(format!(
            "{} {} {}; {linked}; {}",
            report.plugin_type, report.digest, report.path, report.admission
        ));
    }
    Ok(lines)
}

/// The findings of `cniwasm validate`: the capabilities the list's plugins
/// declare, and every problem at once.
#[derive(Debug, Clone, Default)]
pub struct Validation {
    pub capabilities: Vec<String>,
    pub problems: Vec<String>,
}

/// Validates a network without running anything: the configuration, that
/// every plugin is found and admitted by the policy, and that each wasm
/// plugin supports the list's version.
pub fn validate(options: &CommandOptions) -> Result<Validation, Error> {
    let list = load_network(&options.netconf_path, &options.network)?;
    let runtime = new_runtime(options)?;
    let version = if list.cni_version.is_empty() {
        "0.1.0"
    } else {
        list.cni_version.as_str()
    };

    let mut validation = Validation::default();
    for (index, plugin) in list.plugins.iter().enumerate() {
        for (capability, enabled) in &plugin.capabilities {
            if *enabled && !validation.capabilities.contains(capability) {
                validation.capabilities.push(capability.clone());
            }
        }

        if let Err(error) = runtime.check_admission(&plugin.plugin_type) {
            validation
                .problems
                .push(format!("plugin {index} ({}): {error}", plugin.plugin_type));
            continue;
        }
        if runtime.resolves_native(&plugin.plugin_type) {
            continue;
        }
        match runtime.supported_versions(&plugin.plugin_type) {
            Ok(versions) if !versions.iter().any(|supported| supported == version) => validation.problems.push(format!(
                "plugin {index} ({}) does not support config version {version:?}; it supports {}",
                plugin.plugin_type,
                versions.join(", ")
            )),
            Ok(_) => {}
            Err(error) => validation.problems.push(format!("plugin {index} ({}): {error}", plugin.plugin_type)),
        }

        // The IPAM plugin a plugin delegates to must be there and admitted too.
        let ipam_type = plugin
            .raw
            .get("ipam")
            .and_then(|ipam| ipam.get("type"))
            .and_then(Value::as_str);
        if let Some(ipam_type) = ipam_type
            && let Err(error) = runtime.check_admission(ipam_type)
        {
            validation.problems.push(format!(
                "plugin {index} ({}), IPAM {ipam_type}: {error}",
                plugin.plugin_type
            ));
        }
    }
    validation.capabilities.sort();
    Ok(validation)
}
