//! Clean-up that runs however the harness ends: normally, on Ctrl-C/SIGTERM, or on a panic.
//!
//! It kills exactly the pids this harness started (recorded here when they start, forgotten when
//! they are reaped) and deletes the harness's namespaces. Nodes also get SIGKILL from the kernel
//! if the harness dies without running this (`setpriv --pdeathsig KILL`, see [`super::node`]).

use std::collections::BTreeSet;
use std::sync::Mutex;

use super::network;

/// Pids of node processes started and not yet reaped.
static STARTED_PIDS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

pub fn remember(pid: i32) {
    started_pids().insert(pid);
}

pub fn forget(pid: i32) {
    started_pids().remove(&pid);
}

fn started_pids() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    // A panic while holding this lock leaves the set intact; clean-up must still run.
    STARTED_PIDS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// SIGKILLs every pid we started (SIGKILL also ends a SIGSTOPped process) and deletes the
/// namespaces. Safe to call more than once.
pub fn clean_up() {
    let pids: Vec<i32> = std::mem::take(&mut *started_pids()).into_iter().collect();
    for pid in pids {
        // SAFETY: kill(2) with a pid we started; it has not been reaped (we forget pids when we
        // reap them), so it cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
    network::delete_namespaces();
}

/// Runs [`clean_up`] after the default panic message when the main thread panics, so a
/// panicking run leaves nothing behind. A panic elsewhere (a workload task) must not pull the
/// cluster from under a run that goes on: the main thread sees it when it joins the task.
pub fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        if std::thread::current().name() == Some("main") {
            clean_up();
        }
    }));
}

/// Calls [`clean_up`] when dropped: the normal way out and the `?` way out.
pub struct CleanupGuard;

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        clean_up();
    }
}
