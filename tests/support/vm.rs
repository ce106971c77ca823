//! Running a test binary's tests again under another kernel, for features
//! the kernel of the machine may lack (bridge VLAN filtering, for one).
//! `scripts/vm-run.sh` boots Debian's kernel in QEMU over this machine's
//! root file system; the tests inside create their namespaces as anywhere.

use std::process::Command;

use crate::{CliOutput, repo_root};

/// Set inside the VM, so that tests there insist on the kernel feature
/// instead of taking the path for kernels without it.
pub const IN_VM: &str = "CNIWASM_IN_VM";

/// Tells whether this process runs inside the VM that [`rerun_in_vm`] started.
pub fn in_vm() -> bool {
    std::env::var(IN_VM).as_deref() == Ok("1")
}

/// Runs the current test binary in the VM with `args` (libtest's, such as
/// `--skip NAME`), one test at a time, and returns what it printed. Panics
/// when the VM cannot start, so a missing QEMU or kernel image fails the
/// calling test instead of skipping it.
pub fn rerun_in_vm(args: &[&str]) -> CliOutput {
    let exe = std::env::current_exe().expect("the test binary has a path");
    let script = repo_root().join("scripts/vm-run.sh");

    let output = Command::new(&script)
        .arg(&exe)
        .args(["--test-threads=1", "--color=never"])
        .args(args)
        .env(IN_VM, "1")
        // Backtraces make a failure inside the VM readable from outside.
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap_or_else(|error| panic!("failed to start {}: {error}", script.display()));
    let output = CliOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };

    assert_ne!(
        output.status.code(),
        Some(2),
        "scripts/vm-run.sh could not start the VM; run `make setup` as root to install QEMU and a kernel image\n{}",
        output.stderr
    );
    output
}

/// Reads the number of passed tests from libtest's summary line
/// (`test result: ok. 3 passed; 0 failed; ...`); none when the run did not
/// finish with every test passing.
pub fn passed_count(stdout: &str) -> Option<usize> {
    let summary = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("test result: ok. "))?;
    let (count, rest) = summary.split_once(' ')?;
    rest.starts_with("passed; 0 failed")
        .then(|| count.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::passed_count;

    #[test]
    fn summary_read() {
        let stdout = "test a ... ok\n\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out; finished in 1.0s\n";
        assert_eq!(passed_count(stdout), Some(3));
        let failed = "test result: FAILED. 2 passed; 1 failed; 0 ignored\n";
        assert_eq!(passed_count(failed), None);
        assert_eq!(passed_count("no summary"), None);
    }
}
