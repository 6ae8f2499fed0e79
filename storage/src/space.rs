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
        let free = match free_bytes(&self.dir) {
            Ok(free) => free,
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

/// Bytes an unprivileged writer may still use on the volume holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a writable statvfs that
    // the call fills in; nothing is retained past the call.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_refuses_what_would_go_below_it_and_zero_admits_everything() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        assert_eq!(SpaceReserve::new(dir.path(), 0).admit(u64::MAX), Ok(()));
        assert_eq!(SpaceReserve::new(dir.path(), 1).admit(0), Ok(()));
        let above_free = SpaceReserve::new(dir.path(), free.saturating_mul(2));
        let reason = above_free.admit(0).unwrap_err();
        assert!(reason.contains("log.dir.min.free.bytes"), "{reason}");
        assert!(SpaceReserve::new(dir.path(), 1).admit(u64::MAX).is_err());
    }
}
