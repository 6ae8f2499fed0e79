//! The I/O backend seam: positional vectored writes and data syncs.
//!
//! Every durable write of the log goes through [`IoBackend`], so the io_uring backend (its own
//! issue) and test backends that inject faults slot in without touching the log logic.
//! [`PortableBackend`] uses `pwritev` + `fdatasync`, which every Linux and most Unixes have.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Most iovecs one vectored write takes (Linux's `IOV_MAX`).
pub(crate) const IOVECS_PER_WRITE_MAX: usize = 1024;

/// One file's share of a group commit: `buffers` written in order from byte `position`,
/// then, when `sync`, an fdatasync of the file issued only after that write completed.
pub struct FileJob<'a> {
    pub file: &'a File,
    pub position: u64,
    pub buffers: Vec<&'a [u8]>,
    pub sync: bool,
}

/// How a job failed. A failed write may have written part of its buffers.
#[derive(Debug)]
pub enum JobError {
    Write(io::Error),
    Sync(io::Error),
}

impl std::fmt::Display for JobError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Write(error) => write!(formatter, "write failed: {error}"),
            JobError::Sync(error) => write!(formatter, "fdatasync failed: {error}"),
        }
    }
}

impl JobError {
    /// Out of space or quota: the write can be undone and retried later, the disk is fine.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, JobError::Write(error) if matches!(error.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
}

/// Executes the I/O of a group commit.
pub trait IoBackend: Send + Sync + 'static {
    /// A short name for logs and metrics (`portable`, `io_uring`).
    fn name(&self) -> &'static str;

    /// Runs every job and returns one outcome per job, in order. Jobs on different files
    /// may run concurrently; within a job the sync follows the write. Short writes are
    /// continued; errors are returned as they are and never retried.
    fn run(&self, jobs: &[FileJob<'_>]) -> Vec<Result<(), JobError>>;
}

/// Syncs one file through `backend`.
pub fn sync_file(backend: &dyn IoBackend, file: &File) -> io::Result<()> {
    let job = FileJob {
        file,
        position: 0,
        buffers: Vec::new(),
        sync: true,
    };
    match backend.run(std::slice::from_ref(&job)).pop() {
        Some(Err(JobError::Sync(error) | JobError::Write(error))) => Err(error),
        _ => Ok(()),
    }
}

/// `pwritev` + `fdatasync`, one job after another.
#[derive(Debug, Default)]
pub struct PortableBackend;

impl PortableBackend {
    /// Writes all of `buffers` at `position`, continuing short writes.
    pub fn write_all_at(file: &File, mut position: u64, buffers: &[&[u8]]) -> io::Result<()> {
        let mut pending: Vec<&[u8]> = buffers.iter().copied().filter(|b| !b.is_empty()).collect();
        let mut first = 0;
        while first < pending.len() {
            let chunk = &pending[first..pending.len().min(first + IOVECS_PER_WRITE_MAX)];
            let iovecs: Vec<libc::iovec> = chunk
                .iter()
                .map(|buffer| libc::iovec {
                    iov_base: buffer.as_ptr() as *mut libc::c_void,
                    iov_len: buffer.len(),
                })
                .collect();
            // SAFETY: every iovec points into a live borrowed slice for the duration of the
            // call, and the kernel only reads from them.
            let written = unsafe {
                libc::pwritev(
                    file.as_raw_fd(),
                    iovecs.as_ptr(),
                    iovecs.len() as libc::c_int,
                    position as libc::off_t,
                )
            };
            if written < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            if written == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "pwritev wrote nothing",
                ));
            }
            position += written as u64;
            advance(&mut pending, &mut first, written as usize);
        }
        Ok(())
    }
}

/// Drops `written` bytes from the front of `pending[*first..]`.
pub(crate) fn advance(pending: &mut [&[u8]], first: &mut usize, mut written: usize) {
    while written > 0 {
        let length = pending[*first].len();
        if written >= length {
            written -= length;
            *first += 1;
        } else {
            pending[*first] = &pending[*first][written..];
            written = 0;
        }
    }
}

impl IoBackend for PortableBackend {
    fn name(&self) -> &'static str {
        "portable"
    }

    fn run(&self, jobs: &[FileJob<'_>]) -> Vec<Result<(), JobError>> {
        jobs.iter()
            .map(|job| {
                Self::write_all_at(job.file, job.position, &job.buffers)
                    .map_err(JobError::Write)?;
                if job.sync {
                    job.file.sync_data().map_err(JobError::Sync)?;
                }
                Ok(())
            })
            .collect()
    }
}

/// Makes a directory entry (a created, renamed or deleted file) durable.
pub fn sync_directory(path: &std::path::Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn vectored_writes_land_in_order_at_the_position() {
        let directory = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(directory.path().join("f"))
            .unwrap();
        let many: Vec<Vec<u8>> = (0..3000u32).map(|i| vec![(i % 251) as u8; 3]).collect();
        let slices: Vec<&[u8]> = many.iter().map(|v| v.as_slice()).collect();
        let outcome = PortableBackend.run(&[FileJob {
            file: &file,
            position: 10,
            buffers: slices,
            sync: true,
        }]);
        assert!(outcome.iter().all(Result::is_ok));
        let mut read = vec![0u8; 9000];
        file.read_exact_at(&mut read, 10).unwrap();
        assert_eq!(read, many.concat());
    }
}

/// Which backend `log.io.backend` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// io_uring when the kernel allows it, else portable.
    Auto,
    IoUring,
    Portable,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(BackendChoice::Auto),
            "io_uring" => Ok(BackendChoice::IoUring),
            "portable" => Ok(BackendChoice::Portable),
            other => Err(format!("`{other}` is not auto, io_uring or portable")),
        }
    }
}

/// The backend for `choice`. `IoUring` fails when the kernel refuses io_uring (seccomp,
/// old kernel); `Auto` then falls back to the portable backend and says why in the log.
pub fn select_backend(choice: BackendChoice) -> io::Result<std::sync::Arc<dyn IoBackend>> {
    match choice {
        BackendChoice::Portable => Ok(std::sync::Arc::new(PortableBackend)),
        BackendChoice::IoUring => Ok(std::sync::Arc::new(crate::uring::IoUringBackend::probe()?)),
        BackendChoice::Auto => match select_backend(BackendChoice::IoUring) {
            Ok(backend) => Ok(backend),
            Err(error) => {
                tracing::info!(%error, "io_uring unavailable: using the portable backend");
                Ok(std::sync::Arc::new(PortableBackend))
            }
        },
    }
}
