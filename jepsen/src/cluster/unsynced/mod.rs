//! A filesystem that loses unsynced writes: the fault layer under each node's data directory
//! for the `lose-unsynced` nemesis.
//!
//! Each node's `data/` is a FUSE mount served by a thread of the harness over `data.synced/`,
//! the backing directory. The model, exactly:
//!
//! * **Data writes** are held in the harness's memory, per file, until that file is synced
//!   (`fsync` or `fdatasync`, whichever handle of the file it comes through); reads see them
//!   laid over the backing file, and the file's size includes them. A sync writes them to the
//!   backing file (without syncing the backing file: the harness models a crash of the node's
//!   machine, not of the machine it runs on).
//! * **A crash** ([`UnsyncedMount::crash`], after the node was SIGKILLed and reaped) drops
//!   every write not yet synced and kills every handle opened before it (their late requests
//!   fail with EIO). The node restarts on what was synced.
//! * **Metadata goes straight through and is durable at once**: create, mkdir, rename, unlink,
//!   rmdir, truncation, fallocate, mode changes. A real filesystem may lose a rename or a new
//!   file whose directory was not synced; this layer never does, so it tests the data path
//!   only. Directory syncs therefore succeed without doing anything.
//! * Not modelled: torn or reordered writes within a sync (a sync is all-or-nothing per file),
//!   partially synced files after a crash during a sync, lost metadata, sector-level damage,
//!   and a page cache that writes back on its own (here nothing unsynced ever reaches the
//!   backing file: the worst case, which a real kernel may or may not produce).
//!
//! A plain `kill` does not crash the filesystem: a killed process's writes survive in the
//! page cache of a machine that keeps running, and that is what the held writes are then.

mod filesystem;
mod pending;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

pub use filesystem::{CrashReport, PENDING_BYTES_MAX};
use filesystem::{Shared, UnsyncedFilesystem};

/// The `fsname` of every mount, followed by the run's namespace prefix: leftovers of a run
/// that was SIGKILLed are found by it (see [`unmount_leftovers`]).
const FS_NAME_PREFIX: &str = "karst-jepsen-unsynced-";

/// One mounted filesystem; unmounted when dropped.
pub struct UnsyncedMount {
    shared: Arc<Shared>,
    session: Option<fuser::BackgroundSession>,
    mount_point: PathBuf,
}

impl UnsyncedMount {
    /// Mounts a filesystem at `mount_point` (created if missing) over `backing` (created if
    /// missing), served by a new thread. `owner` names the mount in `/proc/mounts`.
    pub fn mount(backing: &Path, mount_point: &Path, owner: &str) -> anyhow::Result<Self> {
        for directory in [backing, mount_point] {
            std::fs::create_dir_all(directory)
                .with_context(|| format!("create {}", directory.display()))?;
        }
        let shared = Shared::new(backing).context("open the backing directory")?;
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName(format!("{FS_NAME_PREFIX}{owner}")),
            fuser::MountOption::Subtype("karst-jepsen".to_owned()),
        ];
        let session = fuser::spawn_mount(UnsyncedFilesystem(shared.clone()), mount_point, &config)
            .with_context(|| {
                format!(
                    "mount the unsynced-writes filesystem at {} (needs /dev/fuse and root)",
                    mount_point.display()
                )
            })?;
        Ok(UnsyncedMount {
            shared,
            session: Some(session),
            mount_point: mount_point.to_owned(),
        })
    }

    /// Drops every write not yet synced. Call it only while no process uses the mount (after
    /// the node was killed and reaped): that is the crash being modelled.
    pub fn crash(&self) -> CrashReport {
        self.shared.crash()
    }

    /// Unsynced bytes held now.
    pub fn pending_bytes(&self) -> u64 {
        self.shared.pending_bytes()
    }
}

impl Drop for UnsyncedMount {
    /// Detaches the mount (`umount -l`) and lets its serving thread go without joining it.
    /// Every `ip netns exec` started while the mount existed (this run's node restarts, and
    /// any other program's) copied it into a mount namespace of its own, where it stays
    /// until that namespace ends; joining the thread would wait for all of them. The thread
    /// ends with the harness, which also ends the filesystem in every copy (ENOTCONN).
    fn drop(&mut self) {
        lazy_unmount(&self.mount_point);
        // Dropping the session only detaches its thread; its own unmount finds nothing.
        drop(self.session.take());
    }
}

fn lazy_unmount(mount_point: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(mount_point.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: umount2(2) with a valid C string.
    unsafe {
        libc::umount2(path.as_ptr(), libc::MNT_DETACH);
    }
}

/// Detaches every mount of this filesystem whose owner starts with `prefix`: what a run that
/// was SIGKILLed left behind (its serving thread died with it, so each is dead: ENOTCONN).
pub fn unmount_leftovers(prefix: &str) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let wanted = format!("{FS_NAME_PREFIX}{prefix}");
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(source), Some(mount_point)) = (fields.next(), fields.next()) else {
            continue;
        };
        if source.starts_with(&wanted) {
            // /proc/mounts escapes spaces and the like as octal; run directories have none.
            lazy_unmount(Path::new(mount_point));
        }
    }
}
