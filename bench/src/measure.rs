//! Timed child processes with their peak RSS, network namespaces that the
//! benchmark creates and removes, and the summary statistics of samples.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// What one child process did, measured from spawn to reaping.
pub struct Measured {
    pub elapsed: Duration,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident set size in KiB: the maximum over the child and the
    /// descendants it waited for (`ru_maxrss` of `wait4`).
    pub max_rss_kib: u64,
}

/// Runs `command` to completion, timing it and reading its rusage.
pub fn run_measured(command: &mut Command) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to start {command:?}"))?;

    // Reading stderr on a thread keeps a chatty child from blocking on a
    // full pipe while stdout is read here.
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let mut stdout = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut stdout);

    let (status, usage) = wait_with_rusage(child.id())?;
    let elapsed = started.elapsed();
    let stderr = stderr_reader.join().unwrap_or_default();

    Ok(Measured {
        elapsed,
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stdout,
        stderr,
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    })
}

/// Runs `command` and fails with its stderr unless it exits with status 0.
pub fn run_ok(command: &mut Command) -> anyhow::Result<Measured> {
    let measured = run_measured(command)?;
    if !measured.success {
        bail!(
            "{command:?} failed: {}{}",
            measured.stdout.trim(),
            measured.stderr.trim()
        );
    }
    Ok(measured)
}

/// Reaps the child `pid` with `wait4`, which, unlike `Child::wait`, also
/// returns its resource usage.
fn wait_with_rusage(pid: u32) -> anyhow::Result<(i32, libc::rusage)> {
    let pid = libc::pid_t::try_from(pid).context("child pid out of range")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid for writes, and `pid` is a
        // child of this process that nothing else reaps.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            return Ok((status, usage));
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error).context("wait4 failed");
        }
    }
}

/// A network namespace from `ip netns add`, deleted on drop unless it was
/// deleted before.
pub struct Netns {
    pub name: String,
    deleted: bool,
}

impl Netns {
    /// Creates the namespace; returns it with the time `ip netns add` took.
    pub fn create(name: &str) -> anyhow::Result<(Self, Duration)> {
        let measured = run_ok(Command::new("ip").args(["netns", "add", name]))?;
        let netns = Self {
            name: name.to_string(),
            deleted: false,
        };
        Ok((netns, measured.elapsed))
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Deletes the namespace; returns the time `ip netns delete` took.
    pub fn delete(mut self) -> anyhow::Result<Duration> {
        self.deleted = true;
        let measured = run_ok(Command::new("ip").args(["netns", "delete", &self.name]))?;
        Ok(measured.elapsed)
    }

    /// A command run inside the namespace through `ip netns exec`.
    pub fn exec(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Median, spread and extremes of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub count: usize,
    pub median: f64,
    pub p10: f64,
    pub p90: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut millis: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        millis.sort_by(f64::total_cmp);
        Some(Self {
            count: millis.len(),
            median: percentile(&millis, 0.5),
            p10: percentile(&millis, 0.1),
            p90: percentile(&millis, 0.9),
            min: millis[0],
            max: millis[millis.len() - 1],
        })
    }
}

/// The `q` quantile of sorted values, interpolated linearly between ranks.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = q * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}
