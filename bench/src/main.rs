//! `cniwasm-bench`: measures the seed chain (bridge + host-local + portmap)
//! through cniwasm, the reference CNI plugins and a batched native floor, in
//! network namespaces it creates and removes. `bench/run.sh` is the entry
//! point; the `reference` and `native` subcommands are the drivers that the
//! benchmark runs inside each path's host namespace.

mod measure;
mod native;
mod probe;
mod reference;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "cniwasm-bench",
    about = "Benchmark cniwasm against the reference CNI plugins and a native floor"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Run the whole benchmark and print the figures (needs root)
    Run(scenarios::RunOptions),
    /// Run one ADD or DEL through the reference plugins in the current namespace
    #[command(hide = true)]
    Reference {
        operation: Operation,
        #[arg(long)]
        conflist: PathBuf,
        #[arg(long)]
        cap_args: PathBuf,
        #[arg(long)]
        netns: String,
        #[arg(long)]
        container_id: String,
        #[arg(long)]
        ipam_data_dir: PathBuf,
        #[arg(long)]
        result_file: PathBuf,
    },
    /// Run the native floor's setup, ADD or DEL in the current namespace
    #[command(hide = true)]
    Native {
        operation: NativeOperation,
        /// Name of the container's namespace under /var/run/netns
        #[arg(long, default_value = "")]
        netns: String,
        #[arg(long, default_value = "")]
        container_id: String,
        #[arg(long, default_value_t = 0)]
        index: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Operation {
    Add,
    Del,
}

#[derive(Clone, Copy, ValueEnum)]
enum NativeOperation {
    Setup,
    Add,
    Del,
}

fn main() -> ExitCode {
    let outcome = match Cli::parse().mode {
        Mode::Run(options) => scenarios::run(options),
        Mode::Reference {
            operation,
            conflist,
            cap_args,
            netns,
            container_id,
            ipam_data_dir,
            result_file,
        } => {
            let attachment = reference::Attachment {
                conflist,
                capability_args: cap_args,
                netns,
                container_id,
                ipam_data_dir,
                result_file,
            };
            match operation {
                Operation::Add => reference::add(&attachment),
                Operation::Del => reference::del(&attachment),
            }
        }
        Mode::Native {
            operation,
            netns,
            container_id,
            index,
        } => {
            let container = native::Container {
                netns,
                container_id,
                index,
            };
            match operation {
                NativeOperation::Setup => native::setup(),
                NativeOperation::Add => native::add(&container),
                NativeOperation::Del => native::del(&container),
            }
        }
    };

    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cniwasm-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
