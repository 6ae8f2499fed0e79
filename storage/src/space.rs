//! The free-space reserve of the log directory (`log.dir.min.free.bytes`).
//!
//! Partition data is the only thing that grows without bound on the data volume, and the
//! one thing that can be refused with a retriable error. So appends stop while the volume has
//! less than the reserve free, and the rest keeps working on a disk that partition data
//! filled: the metadata log and its vote, checkpoints, the index files of a roll, and a
//! restart's recovery. Without a reserve, a full disk takes the metadata quorum down with it
//! (a failed metadata write stops Raft) and a restarted node cannot even register.
//!
//! The check runs once per group commit (one `statvfs`, next to an fdatasync) and is
//! conservative: a group is refused whole if its bytes would take the free space below the
//! reserve. A write that runs out of space anyway (another process filled the volume) still
//! fails cleanly through the ENOSPC path of the committer.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct SpaceReserve {
    dir: PathBuf,
    min_free_bytes: u64,
}

impl SpaceReserve {
    pub fn new(dir: &Path, min_free_bytes: u64) -> SpaceReserve {
        SpaceReserve {
            dir: dir.to_path_buf(),
            min_free_bytes,
        }
    }

    /// `Err(reason)` when writing `bytes` more would leave less than the reserve free.
    /// A failed `statvfs` admits the write: the write itself then tells the truth.
    pub fn admit(&self, bytes: u64) -> Result<(), String> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let free = match volume_bytes(&self.dir) {
            Ok(volume) => volume.usable,
            Err(error) => {
                tracing::debug!(dir = %self.dir.display(), %error, "statvfs failed; append admitted");
                return Ok(());
            }
        };
        if free.saturating_sub(bytes) >= self.min_free_bytes {
            return Ok(());
        }
        Err(format!(
            "{} has {free} bytes free; writing {bytes} more would go below log.dir.min.free.bytes = {}",
            self.dir.display(),
            self.min_free_bytes
        ))
    }
}

/// Size of the volume holding a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeBytes {
    pub total: u64,
    /// What an unprivileged writer can still use (`f_bavail`), as Java's
    /// `FileStore.getUsableSpace` reports it.
    pub usable: u64,
}

/// `statvfs` of the volume holding `dir`. A filesystem call that can stall on a sick disk:
/// keep it off async worker threads.
pub fn volume_bytes(dir: &Path) -> io::Result<VolumeBytes> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stat` a plain C
    // struct that statvfs fills in (all-zero bytes are a valid value for it).
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let fragment_bytes = stat.f_frsize as u64;
    Ok(VolumeBytes {
        total: (stat.f_blocks as u64).saturating_mul(fragment_bytes),
        usable: (stat.f_bavail as u64).saturating_mul(fragment_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_refuses_what_would_go_below_it_and_zero_admits_everything() {
        let dir = tempfile::tempdir().unwrap();
        let volume = volume_bytes(dir.path()).unwrap();
        let free = volume.usable;
        assert!(free > 0 && volume.total >= free, "{volume:?}");
        assert_eq!(SpaceReserve::new(dir.path(), 0).admit(u64::MAX), Ok(()));
        assert_eq!(SpaceReserve::new(dir.path(), 1).admit(0), Ok(()));
        let above_free = SpaceReserve::new(dir.path(), free.saturating_mul(2));
        let reason = above_free.admit(0).unwrap_err();
        assert!(reason.contains("log.dir.min.free.bytes"), "{reason}");
        assert!(SpaceReserve::new(dir.path(), 1).admit(u64::MAX).is_err());
    }
}
