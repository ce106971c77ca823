//! The benchmark's scenarios: alternating cycles of the three paths, cold
//! start, the in-process engine probe, ADD latency against the number of
//! containers on the bridge, and concurrent ADDs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

use crate::measure::{Measured, Netns, run_ok};
use crate::probe;
use crate::report;

#[derive(clap::Args)]
pub struct RunOptions {
    /// Repository root, with examples/, plugins-wasm/out/ and target/release/cniwasm
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/.."))]
    repo: PathBuf,
    /// Directory for configurations, IPAM state, caches and results; it must exist
    #[arg(long)]
    work_dir: PathBuf,
    /// Prefix of every namespace the benchmark creates
    #[arg(long, default_value_t = format!("cwb{}", std::process::id() % 100_000))]
    prefix: String,
    /// Timed cycles per path
    #[arg(long, default_value_t = 30)]
    cycles: usize,
    /// Untimed cycles per path before the timed ones
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Containers already on the bridge when ADD latency is sampled
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,500")]
    scale_levels: Vec<usize>,
    /// ADD samples at each scale level
    #[arg(long, default_value_t = 10)]
    scale_samples: usize,
    /// ADDs started at once on one network
    #[arg(long, default_value_t = 32)]
    concurrent: usize,
    /// ADDs after clearing the compile cache
    #[arg(long, default_value_t = 3)]
    cold_runs: usize,
    /// Samples of the in-process engine probe
    #[arg(long, default_value_t = 200)]
    probe_samples: usize,
}

/// The three ways of attaching a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cniwasm,
    Reference,
    Native,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Cniwasm => "(a) cniwasm",
            Kind::Reference => "(b) reference plugins",
            Kind::Native => "(c) native floor",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Kind::Cniwasm => "a",
            Kind::Reference => "b",
            Kind::Native => "c",
        }
    }
}

/// Files and programs every path needs.
struct Setup {
    repo: PathBuf,
    work: PathBuf,
    prefix: String,
    cniwasm: PathBuf,
    bench: PathBuf,
    cap_args_file: PathBuf,
    cap_args: String,
    /// The warm compile cache that cniwasm paths share.
    compile_cache: PathBuf,
}

/// One path with its own throwaway host namespace and state directory.
struct HostPath {
    kind: Kind,
    host: Netns,
    dir: PathBuf,
    /// NETCONFPATH of a cniwasm path.
    netconf: PathBuf,
    compile_cache: PathBuf,
}

/// Timings of one full cycle.
pub struct Cycle {
    pub add: Duration,
    pub del: Duration,
    pub cycle: Duration,
    pub add_rss_kib: u64,
}

/// Everything one run measured, for the report.
pub struct Figures {
    pub cycles: Vec<(Kind, Vec<Cycle>)>,
    pub cold_add: Vec<Duration>,
    pub probe: probe::ProbeTimes,
    pub scaling: Vec<ScaleLevel>,
    pub concurrent: Option<Concurrent>,
}

/// ADD and DEL samples with `containers` containers already attached.
pub struct ScaleLevel {
    pub containers: usize,
    pub adds: Vec<Duration>,
    pub dels: Vec<Duration>,
}

pub struct Concurrent {
    pub count: usize,
    pub succeeded: usize,
    pub distinct_addresses: usize,
    pub wall: Duration,
    pub adds: Vec<Duration>,
    pub del_succeeded: usize,
    pub del_wall: Duration,
}

pub fn run(options: RunOptions) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the benchmark creates network namespaces and needs root"
    );
    let setup = prepare(&options)?;

    eprintln!("== engine probe");
    let probe = probe::run(
        &setup.repo.join("plugins-wasm/out"),
        &setup.work.join("probe-cache"),
        options.probe_samples,
    )?;

    eprintln!("== alternating cycles");
    let mut paths = Vec::new();
    for kind in [Kind::Cniwasm, Kind::Reference, Kind::Native] {
        paths.push(HostPath::create(&setup, kind, kind.tag())?);
    }
    let cycles = alternate_cycles(&setup, &paths, &options)?;

    eprintln!("== cold start");
    let cold_add = cold_start(&setup, &mut paths[0], options.cold_runs)?;
    drop(paths);

    eprintln!("== concurrent ADDs");
    let concurrent = if options.concurrent > 0 {
        Some(concurrent_adds(&setup, options.concurrent)?)
    } else {
        None
    };

    eprintln!("== scaling");
    let scaling = scaling(&setup, &options)?;

    let figures = Figures {
        cycles,
        cold_add,
        probe,
        scaling,
        concurrent,
    };
    report::print(&figures, options.cycles);
    Ok(())
}

fn prepare(options: &RunOptions) -> anyhow::Result<Setup> {
    let repo = options
        .repo
        .canonicalize()
        .with_context(|| format!("repository {} not found", options.repo.display()))?;
    let work = options
        .work_dir
        .canonicalize()
        .with_context(|| format!("work directory {} not found", options.work_dir.display()))?;

    let cniwasm = repo.join("target/release/cniwasm");
    ensure!(
        cniwasm.is_file(),
        "{} is missing: run `cargo build --release -p cniwasm-runtime` first",
        cniwasm.display()
    );
    for plugin in ["bridge", "host-local", "portmap", "loopback"] {
        let path = repo.join(format!("plugins-wasm/out/{plugin}.wasm"));
        ensure!(
            path.is_file(),
            "{} is missing: run `make plugins` first",
            path.display()
        );
    }
    for plugin in ["bridge", "host-local", "portmap"] {
        let path = Path::new(crate::reference::PLUGIN_DIR).join(plugin);
        ensure!(
            path.is_file(),
            "{} is missing: install Debian's containernetworking-plugins",
            path.display()
        );
    }

    let cap_args_file = repo.join("examples/mynet-cap-args.json");
    let cap_args = std::fs::read_to_string(&cap_args_file)
        .with_context(|| format!("failed to read {}", cap_args_file.display()))?;
    Ok(Setup {
        repo,
        compile_cache: work.join("compile-cache"),
        work,
        prefix: options.prefix.clone(),
        cniwasm,
        bench: std::env::current_exe()?,
        cap_args_file,
        cap_args: cap_args.trim().to_string(),
    })
}

impl HostPath {
    /// Creates the host namespace `<prefix>-h<tag>` and the path's state
    /// directory, and sets the native floor's shared bridge and chains up.
    fn create(setup: &Setup, kind: Kind, tag: &str) -> anyhow::Result<Self> {
        let (host, _) = Netns::create(&format!("{}-h{tag}", setup.prefix))?;
        run_ok(host.exec("ip").args(["link", "set", "lo", "up"]))?;
        let dir = setup.work.join(format!("path-{tag}"));
        std::fs::create_dir_all(dir.join("results"))?;
        std::fs::create_dir_all(dir.join("ipam"))?;

        let path = Self {
            kind,
            host,
            netconf: setup.repo.join("examples"),
            compile_cache: setup.compile_cache.clone(),
            dir,
        };
        if kind == Kind::Native {
            run_ok(
                path.host
                    .exec(&setup.bench.display().to_string())
                    .args(["native", "setup"]),
            )?;
        }
        Ok(path)
    }

    /// The command that runs ADD or DEL (`operation`) for the container in
    /// namespace `container`; `index` tells the native floor which veth
    /// name and address to use.
    fn command(&self, setup: &Setup, operation: &str, container: &Netns, index: usize) -> Command {
        match self.kind {
            Kind::Cniwasm => {
                let mut command = self.host.exec(&setup.cniwasm.display().to_string());
                command
                    .args([operation, "mynet", &container.path()])
                    .env("NETCONFPATH", &self.netconf)
                    .env("CNI_PATH", setup.repo.join("plugins-wasm/out"))
                    .env("CAP_ARGS", &setup.cap_args)
                    .env("CNIWASM_CACHE_DIR", self.dir.join("cache"))
                    .env("CNIWASM_IPAM_DATA_DIR", self.dir.join("ipam"))
                    .env("CNIWASM_COMPILE_CACHE", &self.compile_cache);
                command
            }
            Kind::Reference => {
                let mut command = self.host.exec(&setup.bench.display().to_string());
                let result_file = self.dir.join(format!("results/{}.json", container.name));
                command
                    .args(["reference", operation, "--conflist"])
                    .arg(self.netconf.join("mynet.conflist"))
                    .arg("--cap-args")
                    .arg(&setup.cap_args_file)
                    .args([
                        "--netns",
                        &container.path(),
                        "--container-id",
                        &container.name,
                    ])
                    .arg("--ipam-data-dir")
                    .arg(self.dir.join("ipam"))
                    .arg("--result-file")
                    .arg(result_file);
                command
            }
            Kind::Native => {
                let mut command = self.host.exec(&setup.bench.display().to_string());
                command.args(["native", operation, "--netns", &container.name]);
                command.args(["--container-id", &container.name, "--index"]);
                command.arg(index.to_string());
                command
            }
        }
    }

    /// Runs one cycle: namespace create, ADD, DEL, namespace delete.
    fn cycle(
        &self,
        setup: &Setup,
        name: &str,
        index: usize,
        verify: bool,
    ) -> anyhow::Result<Cycle> {
        let started = Instant::now();
        let (container, _) = Netns::create(name)?;
        let add = run_ok(&mut self.command(setup, "add", &container, index))?;
        if verify {
            verify_attached(&container, self.kind)?;
        }
        let del = run_ok(&mut self.command(setup, "del", &container, index))?;
        container.delete()?;

        Ok(Cycle {
            add: add.elapsed,
            del: del.elapsed,
            cycle: started.elapsed(),
            add_rss_kib: add.max_rss_kib,
        })
    }
}

/// Checks that eth0 in the container has an address of the seed subnet.
fn verify_attached(container: &Netns, kind: Kind) -> anyhow::Result<()> {
    let output = run_ok(Command::new("ip").args([
        "-n",
        &container.name,
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]))?;
    ensure!(
        output.stdout.contains("inet 10.244."),
        "{}: eth0 in {} has no 10.244.0.0/16 address after ADD: {}",
        kind.label(),
        container.name,
        output.stdout
    );
    Ok(())
}

/// Runs warm-up cycles, then `cycles` rounds in which every path runs one
/// cycle. The order rotates each round, so no path always runs first.
fn alternate_cycles(
    setup: &Setup,
    paths: &[HostPath],
    options: &RunOptions,
) -> anyhow::Result<Vec<(Kind, Vec<Cycle>)>> {
    let mut sequence = 0;
    for path in paths {
        for _ in 0..options.warmup.max(1) {
            sequence += 1;
            let name = format!("{}-c{}", setup.prefix, sequence);
            path.cycle(setup, &name, sequence, true)?;
        }
    }

    let mut samples: Vec<(Kind, Vec<Cycle>)> = paths.iter().map(|p| (p.kind, Vec::new())).collect();
    for round in 0..options.cycles {
        for offset in 0..paths.len() {
            let which = (round + offset) % paths.len();
            sequence += 1;
            let name = format!("{}-c{}", setup.prefix, sequence);
            let cycle = paths[which].cycle(setup, &name, sequence, false)?;
            samples[which].1.push(cycle);
        }
        eprint!("\r   round {}/{}", round + 1, options.cycles);
    }
    eprintln!();
    Ok(samples)
}

/// Times the first ADD after the compile cache was cleared, `runs` times,
/// each with a new empty cache directory.
fn cold_start(setup: &Setup, path: &mut HostPath, runs: usize) -> anyhow::Result<Vec<Duration>> {
    let warm_cache = path.compile_cache.clone();
    let mut samples = Vec::new();
    for run in 0..runs {
        let cold_cache = setup.work.join(format!("cold-cache-{run}"));
        path.compile_cache = cold_cache.clone();

        let (container, _) = Netns::create(&format!("{}-cold{run}", setup.prefix))?;
        let add = run_ok(&mut path.command(setup, "add", &container, 0));
        let del = run_ok(&mut path.command(setup, "del", &container, 0));
        container.delete()?;
        let _ = std::fs::remove_dir_all(cold_cache);

        samples.push(add?.elapsed);
        del?;
    }
    path.compile_cache = warm_cache;
    Ok(samples)
}

/// Starts `count` ADDs at once on one network, checks that all succeed with
/// distinct addresses, then removes them with `count` concurrent DELs.
fn concurrent_adds(setup: &Setup, count: usize) -> anyhow::Result<Concurrent> {
    let path = HostPath::create(setup, Kind::Cniwasm, "p")?;
    let mut containers = Vec::new();
    for n in 0..count {
        containers.push(Netns::create(&format!("{}-p{n}", setup.prefix))?.0);
    }

    let (adds, wall) = run_at_once(&containers, |container| {
        path.command(setup, "add", container, 0)
    })?;
    let succeeded = adds.iter().filter(|m| m.success).count();
    let mut addresses = BTreeSet::new();
    for measured in adds.iter().filter(|m| m.success) {
        let result: Value = serde_json::from_str(&measured.stdout)
            .with_context(|| format!("invalid ADD result: {}", measured.stdout))?;
        if let Some(address) = result["ips"][0]["address"].as_str() {
            addresses.insert(address.to_string());
        }
    }
    for failed in adds.iter().filter(|m| !m.success) {
        eprintln!(
            "   concurrent ADD failed: {}{}",
            failed.stdout.trim(),
            failed.stderr.trim()
        );
    }

    let (dels, del_wall) = run_at_once(&containers, |container| {
        path.command(setup, "del", container, 0)
    })?;
    let del_succeeded = dels.iter().filter(|m| m.success).count();

    Ok(Concurrent {
        count,
        succeeded,
        distinct_addresses: addresses.len(),
        wall,
        adds: adds.iter().map(|m| m.elapsed).collect(),
        del_succeeded,
        del_wall,
    })
}

/// Runs one command per container, all released by one barrier; returns
/// each measurement and the wall time from release to the last exit.
fn run_at_once(
    containers: &[Netns],
    command: impl Fn(&Netns) -> Command + Sync,
) -> anyhow::Result<(Vec<Measured>, Duration)> {
    let barrier = Arc::new(Barrier::new(containers.len() + 1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = containers
            .iter()
            .map(|container| {
                let barrier = barrier.clone();
                let mut command = command(container);
                scope.spawn(move || {
                    barrier.wait();
                    crate::measure::run_measured(&mut command)
                })
            })
            .collect();

        barrier.wait();
        let started = Instant::now();
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.join().expect("a runner thread does not panic")?);
        }
        Ok((results, started.elapsed()))
    })
}

/// Samples ADD and DEL latency with 1, 10, 100, ... containers already on
/// one bridge, on a /16 copy of the seed network so 500 containers fit.
fn scaling(setup: &Setup, options: &RunOptions) -> anyhow::Result<Vec<ScaleLevel>> {
    let mut levels = options.scale_levels.clone();
    levels.sort_unstable();
    if levels.is_empty() {
        return Ok(Vec::new());
    }

    let mut path = HostPath::create(setup, Kind::Cniwasm, "s")?;
    path.netconf = write_wide_conflist(setup)?;

    let mut filled: Vec<Netns> = Vec::new();
    let mut figures = Vec::new();
    let mut sequence = 0;
    for level in levels {
        while filled.len() < level {
            let (container, _) = Netns::create(&format!("{}-s{}", setup.prefix, filled.len()))?;
            run_ok(&mut path.command(setup, "add", &container, 0))?;
            filled.push(container);
            if filled.len().is_multiple_of(50) {
                eprint!("\r   {} containers", filled.len());
            }
        }

        let mut adds = Vec::new();
        let mut dels = Vec::new();
        for _ in 0..options.scale_samples {
            sequence += 1;
            let name = format!("{}-t{sequence}", setup.prefix);
            let cycle = path.cycle(setup, &name, 0, false)?;
            adds.push(cycle.add);
            dels.push(cycle.del);
        }
        eprintln!("\r   {level} containers sampled");
        figures.push(ScaleLevel {
            containers: level,
            adds,
            dels,
        });
    }

    eprintln!("   removing {} containers", filled.len());
    drop(filled);
    Ok(figures)
}

/// Writes the seed list with subnet 10.244.0.0/16; returns its directory.
fn write_wide_conflist(setup: &Setup) -> anyhow::Result<PathBuf> {
    let seed = setup.repo.join("examples/mynet.conflist");
    let mut list: Value = serde_json::from_str(&std::fs::read_to_string(&seed)?)?;
    let Some(ipam) = list["plugins"][0]["ipam"].as_object_mut() else {
        bail!("{} has no ipam section in its first plugin", seed.display());
    };
    ipam.insert("subnet".into(), Value::String("10.244.0.0/16".into()));

    let dir = setup.work.join("wide-conf");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("mynet.conflist"),
        serde_json::to_string_pretty(&list)?,
    )?;
    Ok(dir)
}
