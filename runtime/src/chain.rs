//! ADD, DEL and CHECK over a network configuration list.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cniwasm_host_api::kernel::Namespace;
use cniwasm_host_api::kernel::{Kernel, Owner};
use cniwasm_host_api::plugin_host::{
    CreatedLinks, HostContext, HostContextOptions, cniwasm::host::types,
};
use cniwasm_types::{codes, result_from_json, result_to_json, version_at_least};
use serde_json::{Map, Value};

use crate::admission::admit;
use crate::cache::{self, CacheEntry, CacheKey};
use crate::config::{NetworkConfigList, PluginConfig, check_name};
use crate::engine::{LoadedPlugin, PluginEngine};
use crate::error::Error;
use crate::ipam::IpamRunner;
use crate::kernel::KernelFactory;
use crate::sandbox::{self, Command, PluginCall};
use cniwasm_host_api::audit::{AuditContext, AuditLog};
use cniwasm_host_api::policy::Policy;

/// Settings of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Directories searched, in order, for `<type>.wasm` (`CNI_PATH`).
    pub plugin_path: Vec<PathBuf>,
    /// Root of the result cache (libcni's default is `/var/lib/cni`).
    pub cache_dir: PathBuf,
    /// IPAM state root used when a configuration sets no `ipam.dataDir`.
    pub ipam_data_dir: PathBuf,
    /// Directory of compiled plugins; `None` compiles on every run.
    pub compile_cache: Option<PathBuf>,
    /// The node's plugin policy, with its limits and audit log.
    pub policy: Arc<Policy>,
    /// Looks up only `<type>.wasm`, never a native executable. Exec mode sets
    /// it, since there the executable named after the type is the link that
    /// started cniwasm.
    pub wasm_only: bool,
}

/// One attachment of a container to a network: libcni's `RuntimeConf`.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub container_id: String,
    /// The container's network namespace; `None` on a DEL without one.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` pairs.
    pub args: Vec<(String, String)>,
    /// Capability arguments (`CAP_ARGS`), such as `portMappings`.
    pub capability_args: Map<String, Value>,
}

/// Finds `<type>.wasm` on the plugin path.
#[derive(Debug, Clone)]
pub(crate) struct PluginLocator {
    pub search_path: Vec<PathBuf>,
}

impl PluginLocator {
    pub fn find(&self, plugin_type: &str) -> Result<PathBuf, Error> {
        self.search_path
            .iter()
            .map(|dir| dir.join(format!("{plugin_type}.wasm")))
            .find(|path| path.is_file())
            .ok_or_else(|| Error::PluginNotFound {
                plugin_type: plugin_type.to_string(),
                search_path: self.search_path.clone(),
            })
    }

    pub fn load(&self, engine: &PluginEngine, plugin_type: &str) -> Result<LoadedPlugin, Error> {
        Ok(engine.load(&self.find(plugin_type)?)?)
    }

    /// Finds `<type>.wasm` in every directory first, then an executable
    /// named `<type>`, which runs as a native plugin.
    pub fn resolve(&self, plugin_type: &str) -> Result<Resolved, Error> {
        let wasm_missing = match self.find(plugin_type) {
            Ok(path) => return Ok(Resolved::Wasm(path)),
            Err(error) => error,
        };
        self.search_path
            .iter()
            .map(|dir| dir.join(plugin_type))
            .find(|path| path.is_file())
            .map(Resolved::Native)
            .ok_or(wasm_missing)
    }
}

/// The location of a plugin type: a wasm file or a native executable.
pub(crate) enum Resolved {
    Wasm(PathBuf),
    Native(PathBuf),
}

/// A plugin of a chain, ready to run.
enum ChainPlugin {
    Wasm(LoadedPlugin),
    /// An executable run through the exec protocol, outside the sandbox.
    Native(PathBuf),
    /// A plugin that could not be found or admitted; its step of a DEL fails
    /// with this error while the others run.
    Unavailable(cniwasm_types::CniError),
}

pub struct Runtime {
    engine: Arc<PluginEngine>,
    options: RuntimeOptions,
    kernels: Arc<dyn KernelFactory>,
    audit: AuditLog,
    /// Random id shared by the audit records of this runtime's operations.
    invocation_id: String,
}

/// State shared by every plugin call of one chain operation.
struct ChainRun<'a> {
    list: &'a NetworkConfigList,
    attachment: &'a Attachment,
    plugins: Vec<ChainPlugin>,
    kernel: Arc<Mutex<Kernel>>,
    invocation: types::Invocation,
    owner: Owner,
    created_links: CreatedLinks,
    /// Set for a DEL chain: plugin calls leave their kernel work running and
    /// collect their state files here, and [`finish_del`] waits
    /// once for the whole chain. A veth deletion and the NAT removals then
    /// overlap, and the removals of all plugins commit together.
    deferred: Option<Mutex<Vec<PathBuf>>>,
}

impl Runtime {
    pub fn new(options: RuntimeOptions, kernels: Arc<dyn KernelFactory>) -> Result<Self, Error> {
        let engine = PluginEngine::new(options.compile_cache.clone())?;
        let audit = match &options.policy.audit_log {
            Some(path) => AuditLog::open(path)?,
            None => AuditLog::disabled(),
        };
        Ok(Self {
            engine,
            options,
            kernels,
            audit,
            invocation_id: random_id(),
        })
    }

    /// Builds the audit context of one plugin call, for `plugin` with `digest`.
    pub(crate) fn audit_context(
        &self,
        owner: &Owner,
        command: Command,
        plugin: &str,
        digest: &str,
    ) -> AuditContext {
        AuditContext {
            invocation: self.invocation_id.clone(),
            network: owner.network.clone(),
            container_id: owner.container_id.clone(),
            ifname: owner.ifname.clone(),
            command: command.as_str().to_string(),
            plugin: plugin.to_string(),
            digest: format!("sha256:{digest}"),
        }
    }

    fn locator(&self) -> PluginLocator {
        PluginLocator {
            search_path: self.options.plugin_path.clone(),
        }
    }

    /// Adds the container to the network and returns the final result in the
    /// list's `cniVersion`. When a plugin fails, DEL runs for it and for every
    /// plugin before it, so the failed ADD leaves nothing behind.
    pub fn add(&self, list: &NetworkConfigList, attachment: &Attachment) -> Result<Value, Error> {
        validate_attachment(list, attachment)?;
        let netns = attachment.netns.as_deref().ok_or_else(|| {
            Error::invalid(
                codes::INVALID_ENVIRONMENT_VARIABLES,
                "missing network namespace path: ADD needs one",
            )
        })?;
        check_netns_exists(netns)?;
        let run = self.prepare(list, attachment, Some(netns), Command::Add)?;
        self.check_not_attached(&run)?;

        let mut previous: Option<Value> = None;
        for (index, plugin) in list.plugins.iter().enumerate() {
            let config = inject(list, plugin, previous.as_ref(), &attachment.capability_args);
            let outcome = self
                .call(&run, index, Command::Add, &config)
                .and_then(|output| parse_plugin_result(&run, index, output));
            match outcome {
                Ok(result) => previous = Some(result),
                Err(error) => {
                    self.roll_back(&run, index, previous.as_ref());
                    return Err(error);
                }
            }
        }

        let result = previous.expect("a list has at least one plugin");
        let result = result_to_json(
            &result_from_json(&result, &list.cni_version).map_err(|e| result_error(&run, e))?,
            &list.cni_version,
        )
        .map_err(|e| result_error(&run, e))?;

        if let Err(error) = self.write_cache(&run, &result) {
            self.roll_back(&run, list.plugins.len() - 1, Some(&result));
            return Err(error);
        }
        Ok(result)
    }

    /// Removes the container from the network: DEL for every plugin in
    /// reverse order with the cached result, going on past failures. The cache
    /// file goes only when every plugin succeeded, so DEL can be retried.
    pub fn del(&self, list: &NetworkConfigList, attachment: &Attachment) -> Result<(), Error> {
        let netns = attachment.netns.as_deref().filter(|path| path.exists());
        let mut run = self.prepare(list, attachment, netns, Command::Del)?;
        let key = CacheKey {
            network: &list.name,
            container_id: &attachment.container_id,
            ifname: &attachment.ifname,
        };

        let cached = match cache::read(&self.options.cache_dir, key) {
            Ok(cached) => cached,
            Err(error) => {
                tracing::warn!(%error, "ignoring unreadable result cache");
                None
            }
        };
        let previous = cached
            .as_ref()
            .filter(|_| version_at_least(&list.cni_version, "0.4.0"))
            .and_then(|cached| convert_cached(&cached.result, &list.cni_version));
        let mut capability_args = attachment.capability_args.clone();
        if capability_args.is_empty()
            && let Some(cached) = &cached
        {
            capability_args = cached.capability_args.clone();
        }
        run.invocation.args =
            merged_args(attachment, cached.as_ref().map(|c| c.cni_args.as_slice()));

        // A native plugin must find the kernel as the plugins before it
        // left it, so only an all-wasm chain waits once at the end.
        let all_wasm = run
            .plugins
            .iter()
            .all(|plugin| !matches!(plugin, ChainPlugin::Native(_)));
        if all_wasm {
            run.deferred = Some(Mutex::default());
        }

        let mut errors = Vec::new();
        for (index, plugin) in list.plugins.iter().enumerate().rev() {
            let config = inject(list, plugin, previous.as_ref(), &capability_args);
            if let Err(error) = self.call(&run, index, Command::Del, &config) {
                errors.push(error);
            }
        }
        if let Err(error) = finish_del(&run) {
            errors.push(error);
        }

        if !errors.is_empty() {
            return Err(if errors.len() == 1 {
                errors.remove(0)
            } else {
                Error::Many { errors }
            });
        }
        cache::remove(&self.options.cache_dir, key)?;
        Ok(())
    }

    /// Checks the attachment: CHECK for every plugin in order, with the cached
    /// result as `prevResult`. Lists older than 0.4.0 have no CHECK.
    pub fn check(&self, list: &NetworkConfigList, attachment: &Attachment) -> Result<(), Error> {
        if !version_at_least(&list.cni_version, "0.4.0") {
            return Err(Error::VersionTooOld {
                version: list.cni_version.clone(),
                command: "CHECK",
            });
        }
        if list.disable_check {
            return Ok(());
        }
        let netns = attachment.netns.as_deref().ok_or_else(|| {
            Error::invalid(
                codes::INVALID_ENVIRONMENT_VARIABLES,
                "missing network namespace path: CHECK needs one",
            )
        })?;
        check_netns_exists(netns)?;
        let run = self.prepare(list, attachment, Some(netns), Command::Check)?;

        let cached = cache::read(&self.options.cache_dir, cache_key(&run))?;
        let previous = cached
            .as_ref()
            .and_then(|cached| convert_cached(&cached.result, &list.cni_version));
        for (index, plugin) in list.plugins.iter().enumerate() {
            let config = inject(list, plugin, previous.as_ref(), &attachment.capability_args);
            self.call(&run, index, Command::Check, &config)?;
        }
        Ok(())
    }

    /// Runs one plugin as an exec-protocol plugin would run: `config` is the
    /// configuration exactly as the calling runtime wrote it, with nothing
    /// injected, no result cache and no rollback (the caller runs DEL).
    pub fn run_single(
        &self,
        list: &NetworkConfigList,
        attachment: &Attachment,
        command: Command,
        config: &str,
    ) -> Result<Option<String>, Error> {
        let netns = match command {
            Command::Add | Command::Check => {
                let netns = attachment.netns.as_deref().ok_or_else(|| {
                    Error::invalid(
                        codes::INVALID_ENVIRONMENT_VARIABLES,
                        "required env variables [CNI_NETNS] missing",
                    )
                })?;
                check_netns_exists(netns)?;
                Some(netns)
            }
            _ => attachment.netns.as_deref().filter(|path| path.exists()),
        };
        let run = self.prepare(list, attachment, netns, command)?;
        self.call(&run, 0, command, config)
    }

    /// Returns the CNI versions a plugin declares through its
    /// `supported-versions` export.
    pub fn supported_versions(&self, plugin_type: &str) -> Result<Vec<String>, Error> {
        let plugin = self.locator().load(&self.engine, plugin_type)?;
        sandbox::supported_versions(&self.engine, &plugin).map_err(|source| Error::Plugin {
            command: "version",
            index: 0,
            plugin_type: plugin_type.to_string(),
            source: Box::new(source),
        })
    }

    /// Checks that a plugin type can run: found, and admitted by the policy
    /// (digest, imports, native plugins). Used by `cniwasm validate`.
    pub fn check_admission(&self, plugin_type: &str) -> Result<(), Error> {
        let owner = Owner {
            network: String::new(),
            container_id: String::new(),
            ifname: String::new(),
        };
        self.admit_plugin(&self.locator(), &owner, Command::Add, plugin_type)
            .map(drop)
    }

    /// Tells whether a plugin type would run as a native executable, which
    /// the policy allows.
    pub fn resolves_native(&self, plugin_type: &str) -> bool {
        matches!(self.locator().resolve(plugin_type), Ok(Resolved::Native(_)))
            && self.options.policy.allow_native_plugins
    }

    /// Garbage-collects the network as libcni does: a full DEL of every cached
    /// attachment of this network that is not in `valid` (all of them when
    /// `valid` is `None`), then, for lists of version 1.1.0 and later, GC on
    /// every plugin with the valid attachments. Errors are collected, not
    /// fatal; `disableGC` turns it all off.
    pub fn gc(
        &self,
        list: &NetworkConfigList,
        valid: Option<&[(String, String)]>,
    ) -> Result<(), Error> {
        if list.disable_gc {
            return Ok(());
        }

        let mut errors = Vec::new();
        for cached in cache::list_attachments(&self.options.cache_dir, &list.name) {
            let still_valid = valid.is_some_and(|valid| {
                valid
                    .iter()
                    .any(|(id, ifname)| *id == cached.container_id && *ifname == cached.ifname)
            });
            if still_valid {
                continue;
            }
            let attachment = Attachment {
                container_id: cached.container_id.clone(),
                netns: (!cached.netns.is_empty()).then(|| PathBuf::from(&cached.netns)),
                ifname: cached.ifname.clone(),
                args: cached.cni_args.clone(),
                capability_args: cached.capability_args.clone(),
            };
            if let Err(error) = self.del(list, &attachment) {
                errors.push(error);
            }
        }

        if version_at_least(&list.cni_version, "1.1.0") {
            let valid_json: Vec<Value> = valid
                .unwrap_or_default()
                .iter()
                .map(|(id, ifname)| serde_json::json!({"containerID": id, "ifname": ifname}))
                .collect();
            errors.extend(
                self.run_without_attachment(list, Command::Gc, Some(&valid_json))
                    .err(),
            );
        }

        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Many { errors }),
        }
    }

    /// Asks every plugin, in order, whether the network can serve ADD; lists
    /// older than 1.1.0 have no STATUS and succeed at once. The first error
    /// is returned with the plugin's code (50 or 51 by convention).
    pub fn status(&self, list: &NetworkConfigList) -> Result<(), Error> {
        if !version_at_least(&list.cni_version, "1.1.0") {
            return Ok(());
        }
        self.run_without_attachment(list, Command::Status, None)
    }

    /// Runs GC or STATUS on every plugin in order, with only `name` and
    /// `cniVersion` injected (and the valid attachments for GC). GC goes on
    /// past failures; STATUS stops at the first.
    fn run_without_attachment(
        &self,
        list: &NetworkConfigList,
        command: Command,
        valid: Option<&[Value]>,
    ) -> Result<(), Error> {
        let attachment = Attachment::default();
        let run = self.prepare(list, &attachment, None, command)?;

        let mut errors = Vec::new();
        for (index, plugin) in list.plugins.iter().enumerate() {
            let mut config = plugin.raw.clone();
            config.insert("name".into(), Value::String(list.name.clone()));
            config.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
            config.remove("prevResult");
            config.remove("runtimeConfig");
            if let Some(valid) = valid {
                // libcni sets both keys: the specification once named the second.
                config.insert(
                    "cni.dev/valid-attachments".into(),
                    Value::Array(valid.to_vec()),
                );
                config.insert("cni.dev/attachments".into(), Value::Array(valid.to_vec()));
            }
            let config = serde_json::to_string(&config).expect("a JSON object always serialises");

            match self.call(&run, index, command, &config) {
                Ok(_) => {}
                Err(error) if command == Command::Status => return Err(error),
                Err(error) => errors.push(error),
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Many { errors }),
        }
    }

    /// Loads every plugin before anything runs, so a missing plugin fails the
    /// operation with no kernel change, then opens the kernel.
    fn prepare<'a>(
        &self,
        list: &'a NetworkConfigList,
        attachment: &'a Attachment,
        netns: Option<&Path>,
        command: Command,
    ) -> Result<ChainRun<'a>, Error> {
        let owner = Owner {
            network: list.name.clone(),
            container_id: attachment.container_id.clone(),
            ifname: attachment.ifname.clone(),
        };

        let locator = self.locator();
        let mut plugins = Vec::with_capacity(list.plugins.len());
        for plugin in &list.plugins {
            match self.admit_plugin(&locator, &owner, command, &plugin.plugin_type) {
                Ok(admitted) => plugins.push(admitted),
                // DEL must release what it can, so a plugin that cannot run
                // fails only its own step; every other command stops here.
                Err(error) if command == Command::Del => {
                    plugins.push(ChainPlugin::Unavailable(error.to_cni_error()))
                }
                Err(error) => return Err(error),
            }
        }
        let kernel = Arc::new(Mutex::new(self.kernels.open(netns)?));

        let invocation = types::Invocation {
            container_id: attachment.container_id.clone(),
            ifname: attachment.ifname.clone(),
            netns: netns.map(|path| path.display().to_string()),
            args: attachment.args.clone(),
        };
        Ok(ChainRun {
            list,
            attachment,
            plugins,
            kernel,
            invocation,
            owner,
            created_links: CreatedLinks::default(),
            deferred: None,
        })
    }

    /// Refuses an ADD for an attachment that exists already, since the
    /// rollback of a failed ADD would tear it down: one with a cached result,
    /// or whose interface exists in the container. `lo` always exists, so
    /// only the cache shows an attachment for it.
    fn check_not_attached(&self, run: &ChainRun<'_>) -> Result<(), Error> {
        let ifname = &run.attachment.ifname;
        let cached = cache::cache_path(&self.options.cache_dir, cache_key(run)).exists();
        let present = ifname != "lo" && {
            let mut kernel = run
                .kernel
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            kernel
                .netlink
                .get_link(Namespace::Container, ifname)?
                .is_some()
        };
        if !cached && !present {
            return Ok(());
        }

        let reason = if cached {
            "a result is cached for this attachment"
        } else {
            "the interface exists in the container"
        };
        Err(Error::invalid(
            codes::INVALID_ENVIRONMENT_VARIABLES,
            format!(
                "container is attached already as {ifname} ({reason}): run DEL first or choose another CNI_IFNAME"
            ),
        ))
    }

    /// Finds a plugin and checks it against the policy: a wasm plugin's
    /// digest and imports, or whether native plugins may run at all.
    fn admit_plugin(
        &self,
        locator: &PluginLocator,
        owner: &Owner,
        command: Command,
        plugin_type: &str,
    ) -> Result<ChainPlugin, Error> {
        let resolved = match self.options.wasm_only {
            true => Resolved::Wasm(locator.find(plugin_type)?),
            false => locator.resolve(plugin_type)?,
        };
        match resolved {
            Resolved::Wasm(path) => {
                let loaded = self.engine.load(&path)?;
                let context = self.audit_context(owner, command, plugin_type, &loaded.digest);
                let policy = self.options.policy.for_plugin(plugin_type);
                admit(&self.engine, plugin_type, &loaded, policy, (&self.audit, &context))?;
                Ok(ChainPlugin::Wasm(loaded))
            }
            Resolved::Native(path) if self.options.policy.allow_native_plugins => Ok(ChainPlugin::Native(path)),
            Resolved::Native(path) => Err(Error::PluginRejected {
                plugin_type: plugin_type.to_string(),
                path: path.display().to_string(),
                reason: "it is a native executable and the policy does not allow native plugins (rule allowNativePlugins)".into(),
            }),
        }
    }

    fn call(
        &self,
        run: &ChainRun<'_>,
        index: usize,
        command: Command,
        config: &str,
    ) -> Result<Option<String>, Error> {
        let plugin_type = &run.list.plugins[index].plugin_type;
        let span =
            tracing::info_span!("plugin", index, plugin = %plugin_type, command = command.as_str());
        let _entered = span.enter();

        let plugin = match &run.plugins[index] {
            ChainPlugin::Wasm(plugin) => plugin,
            ChainPlugin::Native(path) => {
                return self.call_native(run, index, command, config, path);
            }
            ChainPlugin::Unavailable(error) => {
                return Err(Error::Plugin {
                    command: command_name(command),
                    index,
                    plugin_type: plugin_type.clone(),
                    source: Box::new(sandbox::PluginError::Cni {
                        plugin: plugin_type.clone(),
                        error: error.clone(),
                    }),
                });
            }
        };
        let policy = Arc::new(self.options.policy.for_plugin(plugin_type).clone());
        let audit_context = self.audit_context(&run.owner, command, plugin_type, &plugin.digest);

        let delegate = IpamRunner {
            engine: self.engine.clone(),
            locator: self.locator(),
            kernel: run.kernel.clone(),
            owner: run.owner.clone(),
            invocation: run.invocation.clone(),
            config: config.to_string(),
            default_data_dir: self.options.ipam_data_dir.clone(),
            policy: self.options.policy.clone(),
            audit: self.audit.clone(),
            audit_context: audit_context.clone(),
            created_links: run.created_links.clone(),
        };
        let host = HostContext::new(HostContextOptions {
            kernel: run.kernel.clone(),
            owner: run.owner.clone(),
            plugin: plugin_type.clone(),
            delegate: Arc::new(delegate),
            created_links: run.created_links.clone(),
            policy: policy.clone(),
            audit: self.audit.clone(),
            audit_context: audit_context.clone(),
        });
        let state_path = self.state_path(run, plugin_type);
        let host = match &state_path {
            Some(path) => host.with_state(path.clone()),
            None => host,
        };
        let host = match result_addresses(config) {
            Some(addresses) => host.with_result_addresses(addresses),
            None => host,
        };
        let call = PluginCall {
            plugin,
            plugin_type,
            command,
            invocation: &run.invocation,
            config,
            state_dir: None,
            limits: &policy.limits,
            audit: &self.audit,
            audit_context: &audit_context,
        };

        let outcome = sandbox::call_plugin(&self.engine, call, host);
        let outcome = match &run.deferred {
            Some(_) => outcome,
            None => settle_kernel(run, plugin_type, outcome),
        };
        if command == Command::Del
            && outcome.is_ok()
            && let Some(path) = state_path
        {
            match &run.deferred {
                Some(paths) => paths.lock().unwrap_or_else(|p| p.into_inner()).push(path),
                None => remove_plugin_state(&path),
            }
        }
        outcome.map_err(|source| Error::Plugin {
            command: command_name(command),
            index,
            plugin_type: plugin_type.clone(),
            source: Box::new(source),
        })
    }

    /// Returns the file of a plugin's `state` blob for this attachment:
    /// `<cache dir>/plugin-state/<network>-<container id>-<ifname>/<type>`,
    /// or `None` for calls without an attachment and for a type that is not
    /// a plain file name.
    fn state_path(&self, run: &ChainRun<'_>, plugin_type: &str) -> Option<PathBuf> {
        let plain = !plugin_type.is_empty()
            && !plugin_type.contains('/')
            && plugin_type != "."
            && plugin_type != "..";
        if run.attachment.container_id.is_empty() || !plain {
            return None;
        }
        let attachment = format!(
            "{}-{}-{}",
            run.list.name, run.attachment.container_id, run.attachment.ifname
        );
        let dir = self.options.cache_dir.join("plugin-state").join(attachment);
        Some(dir.join(plugin_type))
    }

    fn call_native(
        &self,
        run: &ChainRun<'_>,
        index: usize,
        command: Command,
        config: &str,
        path: &Path,
    ) -> Result<Option<String>, Error> {
        let plugin_type = &run.list.plugins[index].plugin_type;
        let started = std::time::Instant::now();
        let call = crate::native::NativeCall {
            path,
            plugin_type,
            command,
            invocation: &run.invocation,
            search_path: &self.options.plugin_path,
            config,
        };
        let outcome = crate::native::call_native(&call);

        let context = self.audit_context(&run.owner, command, plugin_type, "native");
        let (result, message) = match &outcome {
            Ok(_) => ("ok".to_string(), String::new()),
            Err(error) => (
                format!("cni-error:{}", error.to_cni_error().code),
                error.to_string(),
            ),
        };
        let record = cniwasm_host_api::audit::PluginCallRecord {
            outcome: result,
            message: format!("native plugin {}; {message}", path.display()),
            wall_time_us: started.elapsed().as_micros() as u64,
            peak_memory_bytes: 0,
            host_calls: 0,
            denials: 0,
            would_denials: 0,
        };
        self.audit.plugin_call(&context, &record);

        outcome.map_err(|source| Error::Plugin {
            command: command_name(command),
            index,
            plugin_type: plugin_type.clone(),
            source: Box::new(source),
        })
    }

    /// Runs DEL for plugins `0..=failed` in reverse after a failed ADD. Errors
    /// are logged, since the ADD error is what the caller must see.
    fn roll_back(&self, run: &ChainRun<'_>, failed: usize, previous: Option<&Value>) {
        for index in (0..=failed).rev() {
            let config = inject(
                run.list,
                &run.list.plugins[index],
                previous,
                &run.attachment.capability_args,
            );
            if let Err(error) = self.call(run, index, Command::Del, &config) {
                tracing::warn!(%error, index, "DEL during rollback of a failed ADD failed");
            }
        }

        // Plugins never delete a bridge on DEL, since other containers share
        // it; one that this failed ADD created has no other user yet.
        // TODO: a concurrent ADD that attached to the new bridge in the
        // meantime loses its port; check for ports before deleting.
        let created =
            std::mem::take(&mut *run.created_links.lock().unwrap_or_else(|p| p.into_inner()));
        let mut kernel = run
            .kernel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for name in created.iter().rev() {
            if let Err(error) = kernel.netlink.delete_link(Namespace::Host, name) {
                tracing::warn!(%error, link = %name, "failed to remove a link created by the failed ADD");
            }
        }
        if let Err(error) = kernel.settle() {
            tracing::warn!(%error, "failed to remove a link created by the failed ADD");
        }
    }

    fn write_cache(&self, run: &ChainRun<'_>, result: &Value) -> Result<(), Error> {
        let netns = run.invocation.netns.clone().unwrap_or_default();
        let entry = CacheEntry {
            key: cache_key(run),
            config_bytes: &run.list.bytes,
            netns: &netns,
            cni_args: &run.attachment.args,
            capability_args: &run.attachment.capability_args,
            result,
        };
        cache::write(&self.options.cache_dir, &entry)?;
        Ok(())
    }
}

/// Waits for the kernel work the plugin started that still runs in the
/// background, so that the plugin's call is only done once its link
/// deletions and NAT removals are. A failure there fails a call that
/// succeeded. After a failed call it is logged, and the plugin's own error
/// is returned.
fn settle_kernel(
    run: &ChainRun<'_>,
    plugin_type: &str,
    outcome: Result<Option<String>, sandbox::PluginError>,
) -> Result<Option<String>, sandbox::PluginError> {
    let settled = run
        .kernel
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .settle();

    match (outcome, settled) {
        (outcome, Ok(())) => outcome,
        (Ok(_), Err(error)) => Err(sandbox::PluginError::Kernel {
            plugin: plugin_type.to_string(),
            source: error,
        }),
        (Err(plugin_error), Err(error)) => {
            tracing::error!(plugin = plugin_type, error = %error, "kernel work of a failed plugin call failed too");
            Err(plugin_error)
        }
    }
}

/// Waits for the kernel work that the DEL calls of a deferred chain left
/// running, then removes the state files of the plugins whose DEL
/// succeeded. When that work fails, the state stays for the retry.
fn finish_del(run: &ChainRun<'_>) -> Result<(), Error> {
    let Some(deferred) = &run.deferred else {
        return Ok(());
    };

    run.kernel
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .settle()?;

    let paths = std::mem::take(&mut *deferred.lock().unwrap_or_else(|p| p.into_inner()));
    for path in &paths {
        remove_plugin_state(path);
    }
    Ok(())
}

/// Removes a plugin's state blob after its DEL succeeded. A failure only
/// leaves a small file behind, so it is logged and DEL still succeeds.
fn remove_plugin_state(path: &Path) {
    if let Err(error) = cniwasm_host_api::plugin_host::remove_state(path) {
        tracing::warn!(%error, path = %path.display(), "failed to remove plugin state after DEL");
    }
}

fn command_name(command: Command) -> &'static str {
    match command {
        Command::Add => "add",
        Command::Del => "delete",
        Command::Check => "check",
        Command::Status => "status",
        Command::Gc => "gc",
    }
}

fn cache_key<'a>(run: &'a ChainRun<'_>) -> CacheKey<'a> {
    CacheKey {
        network: &run.list.name,
        container_id: &run.attachment.container_id,
        ifname: &run.attachment.ifname,
    }
}

/// Arguments of this call, or those cached at ADD when the call has none.
fn merged_args(
    attachment: &Attachment,
    cached: Option<&[(String, String)]>,
) -> Vec<(String, String)> {
    match cached {
        Some(cached) if attachment.args.is_empty() => cached.to_vec(),
        _ => attachment.args.clone(),
    }
}

/// Converts a cached result to the list's version; an unconvertible one is
/// dropped with a warning, as DEL must still run.
fn convert_cached(result: &Value, version: &str) -> Option<Value> {
    let converted =
        result_from_json(result, version).and_then(|parsed| result_to_json(&parsed, version));
    match converted {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(%error, "ignoring cached result that cannot be converted to version {version}");
            None
        }
    }
}

fn parse_plugin_result(
    run: &ChainRun<'_>,
    index: usize,
    output: Option<String>,
) -> Result<Value, Error> {
    let text = output.unwrap_or_default();
    let value: Value = serde_json::from_str(&text)
        .map_err(|error| invalid_output(run, index, format!("invalid result JSON: {error}")))?;
    if !value.is_object() {
        return Err(invalid_output(
            run,
            index,
            "invalid result JSON: expected an object".into(),
        ));
    }
    result_from_json(&value, &run.list.cni_version)
        .map_err(|error| invalid_output(run, index, error.to_string()))?;
    Ok(value)
}

fn result_error(run: &ChainRun<'_>, error: cniwasm_types::ResultError) -> Error {
    invalid_output(run, run.list.plugins.len() - 1, error.to_string())
}

/// Builds the error for an ADD result of plugin `index` that cannot be used.
fn invalid_output(run: &ChainRun<'_>, index: usize, reason: String) -> Error {
    let plugin_type = run.list.plugins[index].plugin_type.clone();
    Error::Plugin {
        command: "add",
        index,
        plugin_type: plugin_type.clone(),
        source: Box::new(sandbox::PluginError::Cni {
            plugin: plugin_type,
            error: cniwasm_types::CniError::new(sandbox::codes::PLUGIN_INVALID_OUTPUT, reason),
        }),
    }
}

/// Returns the addresses of the `prevResult` in a plugin's configuration
/// (`ips[].address`, of results 0.3.0 and later), or `None` without one.
fn result_addresses(config: &str) -> Option<Vec<std::net::IpAddr>> {
    let config: Value = serde_json::from_str(config).ok()?;
    let ips = config.get("prevResult")?.get("ips")?.as_array()?;
    let addresses = ips.iter().filter_map(|ip| {
        let text = ip.get("address")?.as_str()?;
        text.parse::<ipnet::IpNet>().ok().map(|net| net.addr())
    });
    Some(addresses.collect())
}

/// Builds the configuration one plugin reads: its object as written, with
/// `name`, `cniVersion`, `prevResult` and `runtimeConfig` set by the runtime.
/// `runtimeConfig` holds only the capabilities the plugin declares.
pub(crate) fn inject(
    list: &NetworkConfigList,
    plugin: &PluginConfig,
    previous: Option<&Value>,
    capability_args: &Map<String, Value>,
) -> String {
    let mut config = plugin.raw.clone();
    config.insert("name".into(), Value::String(list.name.clone()));
    config.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    match previous {
        Some(result) => config.insert("prevResult".into(), result.clone()),
        None => config.remove("prevResult"),
    };

    let runtime_config: Map<String, Value> = plugin
        .capabilities
        .iter()
        .filter(|(_, enabled)| **enabled)
        .filter_map(|(name, _)| {
            capability_args
                .get(name)
                .map(|value| (name.clone(), value.clone()))
        })
        .collect();
    if runtime_config.is_empty() {
        config.remove("runtimeConfig");
    } else {
        config.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }

    serde_json::to_string(&config).expect("a JSON object always serialises")
}

fn validate_attachment(list: &NetworkConfigList, attachment: &Attachment) -> Result<(), Error> {
    if attachment.container_id.is_empty() {
        return Err(Error::invalid(
            codes::UNKNOWN_CONTAINER,
            "missing container id",
        ));
    }
    check_name(&attachment.container_id).map_err(|reason| {
        Error::invalid(
            codes::INVALID_ENVIRONMENT_VARIABLES,
            format!("invalid container id: {reason}"),
        )
    })?;
    check_name(&list.name)
        .map_err(|reason| Error::invalid(codes::INVALID_NETWORK_CONFIG, reason))?;
    check_ifname(&attachment.ifname)
}

/// Applies the kernel's interface-name rules: 1 to 15 bytes, not `.` or `..`,
/// no `/`, `:` or whitespace.
fn check_ifname(ifname: &str) -> Result<(), Error> {
    let problem = if ifname.is_empty() {
        Some("is empty")
    } else if ifname.len() > 15 {
        Some("is longer than 15 bytes")
    } else if ifname == "." || ifname == ".." {
        Some("is '.' or '..'")
    } else if ifname
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::invalid(
            codes::INVALID_ENVIRONMENT_VARIABLES,
            format!(
                "invalid interface name {ifname:?}: it {problem}; set CNI_IFNAME to a valid name such as eth0"
            ),
        )),
        None => Ok(()),
    }
}

fn check_netns_exists(netns: &Path) -> Result<(), Error> {
    if netns.exists() {
        Ok(())
    } else {
        Err(Error::invalid(
            codes::INVALID_ENVIRONMENT_VARIABLES,
            format!(
                "network namespace {} does not exist: pass the path of an existing namespace, such as /var/run/netns/NAME (ip netns add NAME creates one)",
                netns.display()
            ),
        ))
    }
}

/// Generates a random 16-hex-digit id for audit records.
fn random_id() -> String {
    let mut bytes = [0u8; 8];
    // Without randomness the id is all zeros: records stay valid, only
    // harder to tell apart.
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> NetworkConfigList {
        let object = json!({"name": "mynet", "cniVersion": "0.3.0", "plugins": [
            {"type": "bridge", "bridge": "mynet", "runtimeConfig": {"stale": true}},
            {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}
        ]});
        crate::config::parse_list(
            Path::new("mynet.conflist"),
            Vec::new(),
            object.as_object().unwrap(),
        )
        .unwrap()
    }

    fn capability_args() -> Map<String, Value> {
        json!({"portMappings": [{"hostPort": 9090, "containerPort": 80, "protocol": "tcp"}], "bandwidth": {}})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn inject_sets_name_and_version() {
        let list = list();
        let config: Value =
            serde_json::from_str(&inject(&list, &list.plugins[0], None, &Map::new())).unwrap();
        assert_eq!(config["name"], json!("mynet"));
        assert_eq!(config["cniVersion"], json!("0.3.0"));
        assert_eq!(config["bridge"], json!("mynet"));
        assert_eq!(config.get("prevResult"), None);
    }

    #[test]
    fn inject_drops_runtime_config_without_capabilities() {
        let list = list();
        let config: Value =
            serde_json::from_str(&inject(&list, &list.plugins[0], None, &capability_args()))
                .unwrap();
        assert_eq!(config.get("runtimeConfig"), None);
    }

    #[test]
    fn inject_passes_only_declared_capabilities() {
        let list = list();
        let previous = json!({"cniVersion": "0.3.0"});
        let config: Value = serde_json::from_str(&inject(
            &list,
            &list.plugins[1],
            Some(&previous),
            &capability_args(),
        ))
        .unwrap();
        assert_eq!(
            config["runtimeConfig"],
            json!({"portMappings": capability_args()["portMappings"]})
        );
        assert_eq!(config["prevResult"], previous);
    }

    #[test]
    fn ifname_rules() {
        assert!(check_ifname("eth0").is_ok());
        for bad in ["", "0123456789abcdef", ".", "..", "a/b", "a:b", "a b"] {
            assert!(check_ifname(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn empty_container_id_is_unknown_container() {
        let attachment = Attachment {
            ifname: "eth0".into(),
            ..Attachment::default()
        };
        let error = validate_attachment(&list(), &attachment).unwrap_err();
        assert_eq!(error.to_cni_error().code, codes::UNKNOWN_CONTAINER);
    }
}
