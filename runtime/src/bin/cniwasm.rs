//! `cniwasm`: runs CNI network configuration lists whose plugins are wasm
//! components. A drop-in for `cnitool`, with the same environment.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use cniwasm_runtime::command::{self, CommandOptions};
use cniwasm_runtime::exec;
use cniwasm_types::{CniError, print_json};

#[derive(Parser)]
#[command(
    name = "cniwasm",
    version,
    about = "Run CNI network configuration lists whose plugins are sandboxed WebAssembly components",
    after_help = "Environment (as cnitool reads it):\n  \
        NETCONFPATH  directory of .conflist/.conf files [default: /etc/cni/net.d]\n  \
        CNI_PATH     colon-separated directories searched for <type>.wasm [default: /opt/cni/bin]\n  \
        CNI_IFNAME   interface name in the container [default: eth0]\n  \
        CNI_ARGS     extra arguments, KEY=VALUE pairs separated by ';'\n  \
        CAP_ARGS     capability arguments as a JSON object, e.g. {\"portMappings\":[...]}\n  \
        CNIWASM_LOG  log filter for stderr, e.g. debug [default: warn]\n\n\
        The container id is derived from the namespace path as cnitool derives it:\n\
        \"cnitool-\" and the first 20 hex digits of the SHA-512 of the absolute path.\n\
        ADD prints the result JSON on stdout. On failure every command prints a CNI\n\
        error object on stdout, a message on stderr, and exits with status 1\n\
        (a malformed command line exits with status 2)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Add the container whose namespace is NETNS to NETWORK
    Add(Target),
    /// Check the container's attachment to NETWORK (cniVersion 0.4.0 or later)
    Check(Target),
    /// Remove the container from NETWORK; safe to repeat
    Del(Target),
    /// Delete the cached attachments of NETWORK not listed with --valid, then run plugin GC (cniVersion 1.1.0 or later); no NETNS needed
    Gc {
        #[command(flatten)]
        target: Target,
        /// An attachment to keep, as CONTAINERID/IFNAME; repeat for more. Without any, every cached attachment is deleted, as cnitool does
        #[arg(long = "valid", value_name = "CONTAINERID/IFNAME")]
        valid: Vec<String>,
    },
    /// Ask NETWORK's plugins whether they can serve ADD (cniVersion 1.1.0 or later); no NETNS needed
    Status(Target),
    /// Check NETWORK without running it: configuration, plugins, policy and versions, with every problem listed
    Validate(Target),
    /// Print cniwasm's version and the CNI versions it supports
    Version,
    /// Show a plugin's digest, exports, host imports and what the policy allows it
    Inspect {
        /// Path of the plugin's .wasm file; its type is the file name without .wasm
        plugin: PathBuf,
        /// Policy file [default: /etc/cniwasm/policy.json if it exists, else the built-in policy]
        #[arg(long, env = "CNIWASM_POLICY")]
        policy: Option<PathBuf>,
    },
    /// Install wasm plugins and link them into a CNI bin directory for container runtimes
    Install {
        /// Plugin files, named <type>.wasm
        #[arg(required = true)]
        plugins: Vec<PathBuf>,
        /// Directory for the .wasm files
        #[arg(
            long,
            env = "CNIWASM_PLUGIN_PATH",
            default_value = "/opt/cniwasm/plugins"
        )]
        plugin_dir: PathBuf,
        /// CNI bin directory that receives a link named after each plugin type
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        /// Directory of compiled plugins
        #[arg(
            long,
            env = "CNIWASM_COMPILE_CACHE",
            default_value = "/var/cache/cniwasm"
        )]
        compile_cache: PathBuf,
        /// Replace existing files in the bin directory, native plugins included
        #[arg(long)]
        force: bool,
    },
    /// List installed plugins with digests, links and policy status
    Plugins {
        /// Directory of the .wasm files
        #[arg(
            long,
            env = "CNIWASM_PLUGIN_PATH",
            default_value = "/opt/cniwasm/plugins"
        )]
        plugin_dir: PathBuf,
        /// CNI bin directory to look for links in
        #[arg(long, default_value = "/opt/cni/bin")]
        bin_dir: PathBuf,
        /// Policy file [default: /etc/cniwasm/policy.json if it exists, else the built-in policy]
        #[arg(long, env = "CNIWASM_POLICY")]
        policy: Option<PathBuf>,
    },
    /// Print audit records, optionally filtered
    Audit {
        /// Audit log to read [default: the policy's auditLog]
        #[arg(long)]
        file: Option<PathBuf>,
        /// Policy file whose auditLog to read
        #[arg(long, env = "CNIWASM_POLICY")]
        policy: Option<PathBuf>,
        /// Only records of this container id
        #[arg(long)]
        container: Option<String>,
        /// Only records of this plugin type
        #[arg(long)]
        plugin: Option<String>,
        /// Only host calls with this decision: allow, deny or would-deny
        #[arg(long)]
        decision: Option<String>,
    },
}

#[derive(Args)]
struct Target {
    /// Name of the network configuration list
    network: String,
    /// Path of the container's network namespace, such as /var/run/netns/NAME (add, check and del need it)
    netns: Option<PathBuf>,
    /// Interface name in the container
    #[arg(short, long, env = "CNI_IFNAME", default_value = "eth0")]
    ifname: String,
    /// Directory of network configuration files
    #[arg(long, env = "NETCONFPATH", default_value = "/etc/cni/net.d")]
    netconf_path: PathBuf,
    /// Colon-separated directories searched for <type>.wasm plugins
    #[arg(long, env = "CNI_PATH", default_value = "/opt/cni/bin")]
    cni_path: String,
    /// Root of the result cache: results/<network>-<container id>-<ifname>
    #[arg(long, env = "CNIWASM_CACHE_DIR", default_value = "/var/lib/cni")]
    cache_dir: PathBuf,
    /// IPAM state root for configurations without ipam.dataDir
    #[arg(
        long,
        env = "CNIWASM_IPAM_DATA_DIR",
        default_value = "/var/lib/cni/networks"
    )]
    ipam_data_dir: PathBuf,
    /// Directory of compiled plugins, reused while the plugin file is unchanged
    #[arg(
        long,
        env = "CNIWASM_COMPILE_CACHE",
        default_value = "/var/cache/cniwasm"
    )]
    compile_cache: PathBuf,
    /// Policy file naming what each plugin may do [default: /etc/cniwasm/policy.json if it exists, else the built-in policy]
    #[arg(long, env = "CNIWASM_POLICY")]
    policy: Option<PathBuf>,
    /// Colon-separated directories of installed plugins, searched after CNI_PATH
    #[arg(
        long,
        env = "CNIWASM_PLUGIN_PATH",
        default_value = "/opt/cniwasm/plugins"
    )]
    plugin_path: String,
}

impl Target {
    fn options(self) -> CommandOptions {
        CommandOptions {
            network: self.network,
            netns: self.netns.unwrap_or_default(),
            ifname: self.ifname,
            netconf_path: self.netconf_path,
            cni_path: self.cni_path,
            cni_args: std::env::var("CNI_ARGS").ok(),
            cap_args: std::env::var("CAP_ARGS").ok(),
            cache_dir: self.cache_dir,
            ipam_data_dir: self.ipam_data_dir,
            compile_cache: Some(self.compile_cache),
            policy: self.policy,
            plugin_path: self.plugin_path,
        }
    }
}

/// Tells whether the process was started as a CNI plugin: under another
/// name (a link such as /opt/cni/bin/bridge -> cniwasm), or as `cniwasm`
/// with `CNI_COMMAND` set and no arguments. Returns the plugin type the name
/// gives, if any.
fn exec_mode() -> Option<Option<String>> {
    let mut args = std::env::args_os();
    let name = args.next().and_then(|arg0| {
        std::path::Path::new(&arg0)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
    });
    match name {
        Some(name) if name != "cniwasm" && !name.starts_with("cniwasm-") => Some(Some(name)),
        _ if args.next().is_none() && std::env::var_os("CNI_COMMAND").is_some() => Some(None),
        _ => None,
    }
}

fn run_exec_mode(invoked_as: Option<String>) -> ExitCode {
    // Without a command a CNI plugin describes itself and succeeds.
    if std::env::var_os("CNI_COMMAND").is_none() {
        eprintln!("{}", exec::about(invoked_as.as_deref()));
        return ExitCode::SUCCESS;
    }

    let mut stdin = Vec::new();
    if let Err(error) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut stdin) {
        let error = CniError::new(
            cniwasm_types::codes::IO_FAILURE,
            format!("failed to read the configuration from stdin: {error}"),
        );
        println!(
            "{}",
            print_json(&serde_json::to_value(&error).expect("an error always serialises"))
        );
        return ExitCode::FAILURE;
    }
    let request = exec::ExecRequest {
        invoked_as,
        environment: std::env::vars()
            .filter(|(key, _)| key.starts_with("CNI_") || key.starts_with("CNIWASM_"))
            .collect(),
        stdin,
    };

    match exec::run(&request) {
        Ok(Some(output)) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => {
            println!(
                "{}",
                print_json(&serde_json::to_value(&error).expect("an error always serialises"))
            );
            eprintln!("cniwasm: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CNIWASM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    init_logging();
    if let Some(invoked_as) = exec_mode() {
        return run_exec_mode(invoked_as);
    }
    let cli = Cli::parse();

    let outcome = match cli.command {
        Command::Add(target) => command::add(&target.options()).map(Some),
        Command::Check(target) => command::check(&target.options()).map(|()| None),
        Command::Del(target) => command::del(&target.options()).map(|()| None),
        Command::Gc { target, valid } => command::gc(&target.options(), &valid).map(|()| None),
        Command::Status(target) => command::status(&target.options()).map(|()| None),
        Command::Validate(target) => command::validate(&target.options()).and_then(|validation| {
            let capabilities = if validation.capabilities.is_empty() {
                "none".to_string()
            } else {
                validation.capabilities.join(", ")
            };
            if validation.problems.is_empty() {
                return Ok(Some(format!("valid; capabilities: {capabilities}")));
            }
            Err(cniwasm_runtime::Error::invalid(
                cniwasm_types::codes::INVALID_NETWORK_CONFIG,
                format!("{} problem(s): {}", validation.problems.len(), validation.problems.join("; ")),
            ))
        }),
        Command::Version => Ok(Some(format!(
            "cniwasm {}\nCNI versions: {}",
            env!("CARGO_PKG_VERSION"),
            cniwasm_types::SUPPORTED_VERSIONS.join(", ")
        ))),
        Command::Inspect { plugin, policy } => command::inspect(&plugin, policy.as_deref()).map(|report| {
            Some(format!(
                "plugin:      {}\ntype:        {}\ndigest:      {}\nexports:     {}\nhost imports: {}\nadmission:   {}\npolicy:      {}",
                report.path,
                report.plugin_type,
                report.digest,
                report.exports.join(", "),
                report.host_imports.join(", "),
                report.admission,
                report.policy,
            ))
        }),
        Command::Install { plugins, plugin_dir, bin_dir, compile_cache, force } => {
            let binary = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/cniwasm"));
            let options = command::InstallOptions {
                plugins,
                plugin_dir,
                bin_dir,
                binary,
                compile_cache: Some(compile_cache),
                force,
            };
            command::install(&options).map(|lines| Some(lines.join("\n")))
        }
        Command::Plugins { plugin_dir, bin_dir, policy } => {
            command::list_plugins(&plugin_dir, &bin_dir, policy.as_deref()).map(|lines| Some(lines.join("\n")))
        }
        Command::Audit { file, policy, container, plugin, decision } => {
            let filter = command::AuditFilter { container, plugin, decision };
            command::audit(file.as_deref(), policy.as_deref(), &filter).map(|lines| Some(lines.join("\n")))
        }
    };

    match outcome {
        Ok(Some(output)) => {
            if !output.is_empty() {
                println!("{output}");
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => {
            let cni_error: CniError = error.to_cni_error();
            println!(
                "{}",
                print_json(&serde_json::to_value(&cni_error).expect("an error always serialises"))
            );
            eprintln!("cniwasm: {error}");
            ExitCode::FAILURE
        }
    }
}
