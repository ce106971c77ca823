//! Link deletions that run on their own threads.
//!
//! Unregistering a network device makes the kernel wait for RCU grace
//! periods before `RTM_DELLINK` returns: deleting a veth pair took 17 to
//! 26 ms on a 2-core VM, nearly all of a DEL's netlink time. The host
//! finds the link, returns to the plugin at once, and lets a thread with
//! its own netlink socket wait for the kernel. The plugin's next steps
//! (IPAM release, NAT rule removal) run meanwhile. The runtime waits for
//! every deletion before the plugin call counts as done, so a CNI command
//! never returns while a link it deleted still exists.

use std::sync::Arc;
use std::thread::JoinHandle;

use super::super::netns::NetnsHandles;
use super::{connect, errno};
use crate::kernel::{KernelError, KernelErrorKind, Namespace};

/// One deletion in flight: what it deletes, and the thread doing it.
struct Pending {
    operation: String,
    ns: Namespace,
    thread: JoinHandle<Result<(), KernelError>>,
}

/// Deletions still running, and failures of finished ones not yet reported.
#[derive(Default)]
pub(super) struct BackgroundDeletes {
    pending: Vec<Pending>,
    failures: Vec<KernelError>,
}

impl BackgroundDeletes {
    /// Starts deleting the link with `index` in `ns` on a new thread.
    pub(super) fn start(
        &mut self,
        namespaces: Arc<NetnsHandles>,
        ns: Namespace,
        index: u32,
        operation: String,
    ) -> Result<(), KernelError> {
        let thread_operation = operation.clone();
        let thread = std::thread::Builder::new()
            .name("cniwasm-link-delete".into())
            .spawn(move || delete_link(&namespaces, ns, index, &thread_operation))
            .map_err(|err| KernelError::new(KernelErrorKind::Failed, ns, &operation, err))?;

        self.pending.push(Pending {
            operation,
            ns,
            thread,
        });
        Ok(())
    }

    /// Waits for every deletion in flight and keeps their failures for
    /// [`Self::settle`].
    pub(super) fn wait(&mut self) {
        for pending in self.pending.drain(..) {
            let outcome = pending.thread.join().unwrap_or_else(|_| {
                Err(KernelError::new(
                    KernelErrorKind::Failed,
                    pending.ns,
                    pending.operation,
                    "the deleting thread panicked",
                ))
            });
            if let Err(error) = outcome {
                self.failures.push(error);
            }
        }
    }

    /// Waits for every deletion in flight and returns the first failure not
    /// reported yet. Further failures are logged, since one error is what a
    /// CNI command can return.
    pub(super) fn settle(&mut self) -> Result<(), KernelError> {
        self.wait();

        let mut failures = std::mem::take(&mut self.failures).into_iter();
        let Some(first) = failures.next() else {
            return Ok(());
        };
        for other in failures {
            tracing::error!(error = %other, "link deletion failed");
        }
        Err(first)
    }
}

impl Drop for BackgroundDeletes {
    /// Waits for deletions whose outcome was never requested, as after a
    /// plugin trapped, so the process does not exit mid-deletion. Failures
    /// are logged.
    fn drop(&mut self) {
        if let Err(error) = self.settle() {
            tracing::error!(error = %error, "link deletion failed");
        }
    }
}

/// Deletes the link over a netlink socket of its own. A link already gone
/// (deleted with its veth peer, say) counts as deleted.
fn delete_link(
    namespaces: &NetnsHandles,
    ns: Namespace,
    index: u32,
    operation: &str,
) -> Result<(), KernelError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|err| KernelError::new(KernelErrorKind::Failed, ns, operation, err))?;
    let conn = connect(&runtime, namespaces, ns)?;

    runtime.block_on(async {
        match conn.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(()),
            Err(err) => Err(conn.error(operation, err)),
        }
    })
}
