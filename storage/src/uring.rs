//! The io_uring backend: each storage thread owns a ring; a group commit becomes one
//! submission in which every file gets a vectored write linked to its fdatasync
//! (`IOSQE_IO_LINK`), so the syncs of different partitions run concurrently in the device
//! while each sync still follows its own write.
//!
//! Short writes break a link chain (the kernel cancels the linked sync): the remainder is
//! resubmitted, with the sync, in the next round. Errors are reported per job and never
//! retried. [`IoUringBackend::probe`] checks at start-up that a ring can be created and that
//! the kernel supports the opcodes used; on EPERM/ENOSYS/EINVAL (seccomp, old kernels) the
//! caller falls back to the portable backend.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{opcode, squeue, types, IoUring, Probe};

use crate::io::{advance, FileJob, IoBackend, JobError, IOVECS_PER_WRITE_MAX};

/// Submission queue entries per ring. A job takes at most two (write + sync); larger
/// groups are submitted in slices of `RING_ENTRIES / 2` jobs.
const RING_ENTRIES: u32 = 256;

thread_local! {
    /// The calling storage thread's ring, created on first use.
    static RING: RefCell<Option<IoUring>> = const { RefCell::new(None) };
}

#[derive(Debug)]
pub struct IoUringBackend;

impl IoUringBackend {
    /// Creates a ring and checks the opcodes Karst uses.
    pub fn probe() -> io::Result<IoUringBackend> {
        let ring = IoUring::new(8)?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in [
            (opcode::Writev::CODE, "writev"),
            (opcode::Fsync::CODE, "fsync"),
        ] {
            if !probe.is_supported(code) {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("io_uring does not support {name} on this kernel"),
                ));
            }
        }
        Ok(IoUringBackend)
    }
}

/// Per job progress across submission rounds.
struct Progress<'a> {
    pending: Vec<&'a [u8]>,
    first: usize,
    position: u64,
    write_error: Option<io::Error>,
    sync_error: Option<io::Error>,
    synced: bool,
}

impl Progress<'_> {
    fn remaining(&self) -> bool {
        self.first < self.pending.len()
    }
}

const WRITE_TAG: u64 = 0;
const SYNC_TAG: u64 = 1;

impl IoBackend for IoUringBackend {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn run(&self, jobs: &[FileJob<'_>]) -> Vec<Result<(), JobError>> {
        let mut outcomes = Vec::with_capacity(jobs.len());
        for slice in jobs.chunks(RING_ENTRIES as usize / 2) {
            match run_slice(slice) {
                Ok(slice_outcomes) => outcomes.extend(slice_outcomes),
                // The ring itself failed: every job of the slice fails with that error.
                Err(error) => outcomes.extend(slice.iter().map(|_| {
                    Err(JobError::Write(io::Error::new(
                        error.kind(),
                        format!("io_uring: {error}"),
                    )))
                })),
            }
        }
        outcomes
    }
}

fn run_slice(jobs: &[FileJob<'_>]) -> io::Result<Vec<Result<(), JobError>>> {
    RING.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(IoUring::new(RING_ENTRIES)?);
        }
        let ring = slot.as_mut().expect("created above");
        let mut progress: Vec<Progress<'_>> = jobs
            .iter()
            .map(|job| Progress {
                pending: job
                    .buffers
                    .iter()
                    .copied()
                    .filter(|b| !b.is_empty())
                    .collect(),
                first: 0,
                position: job.position,
                write_error: None,
                sync_error: None,
                synced: false,
            })
            .collect();
        loop {
            // One round: for each unfinished job, a write of what remains (up to IOV_MAX
            // buffers) and, if that covers the rest, its linked sync.
            let mut iovec_sets: Vec<Vec<libc::iovec>> = Vec::new();
            let mut submitted = 0usize;
            for (index, (job, state)) in jobs.iter().zip(progress.iter()).enumerate() {
                if state.write_error.is_some() || state.sync_error.is_some() {
                    continue;
                }
                let wants_sync = job.sync && !state.synced;
                if !state.remaining() && !wants_sync {
                    continue;
                }
                let fd = types::Fd(job.file.as_raw_fd());
                let mut covers_rest = true;
                if state.remaining() {
                    let end = state.pending.len().min(state.first + IOVECS_PER_WRITE_MAX);
                    covers_rest = end == state.pending.len();
                    let iovecs: Vec<libc::iovec> = state.pending[state.first..end]
                        .iter()
                        .map(|b| libc::iovec {
                            iov_base: b.as_ptr() as *mut libc::c_void,
                            iov_len: b.len(),
                        })
                        .collect();
                    let mut entry = opcode::Writev::new(fd, iovecs.as_ptr(), iovecs.len() as u32)
                        .offset(state.position)
                        .build()
                        .user_data((index as u64) << 1 | WRITE_TAG);
                    if wants_sync && covers_rest {
                        entry = entry.flags(squeue::Flags::IO_LINK);
                    }
                    iovec_sets.push(iovecs);
                    // SAFETY: the iovecs (kept in `iovec_sets`) and the buffers they point
                    // to outlive the submission: we wait for every completion of this round
                    // before `iovec_sets` is dropped.
                    unsafe { ring.submission().push(&entry) }
                        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
                    submitted += 1;
                }
                if wants_sync && covers_rest {
                    let entry = opcode::Fsync::new(fd)
                        .flags(types::FsyncFlags::DATASYNC)
                        .build()
                        .user_data((index as u64) << 1 | SYNC_TAG);
                    // SAFETY: an fsync entry references no memory.
                    unsafe { ring.submission().push(&entry) }
                        .map_err(|_| io::Error::other("io_uring submission queue full"))?;
                    submitted += 1;
                }
            }
            if submitted == 0 {
                break;
            }
            let mut completed = 0;
            while completed < submitted {
                match ring.submit_and_wait(submitted - completed) {
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => return Err(error),
                }
                for entry in ring.completion() {
                    completed += 1;
                    let index = (entry.user_data() >> 1) as usize;
                    let result = entry.result();
                    let state = &mut progress[index];
                    if entry.user_data() & 1 == WRITE_TAG {
                        if result < 0 {
                            if result != -libc::EINTR && result != -libc::EAGAIN {
                                state.write_error = Some(io::Error::from_raw_os_error(-result));
                            }
                        } else if result == 0 {
                            state.write_error = Some(io::Error::new(
                                io::ErrorKind::WriteZero,
                                "writev wrote nothing",
                            ));
                        } else {
                            state.position += result as u64;
                            let Progress { pending, first, .. } = state;
                            advance(pending, first, result as usize);
                        }
                    } else if result == -libc::ECANCELED {
                        // The linked write was short or failed: retried or reported.
                    } else if result < 0 {
                        state.sync_error = Some(io::Error::from_raw_os_error(-result));
                    } else {
                        state.synced = true;
                    }
                }
            }
            drop(iovec_sets);
        }
        Ok(progress
            .into_iter()
            .map(|state| match (state.write_error, state.sync_error) {
                (Some(error), _) => Err(JobError::Write(error)),
                (None, Some(error)) => Err(JobError::Sync(error)),
                (None, None) => Ok(()),
            })
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    #[test]
    fn linked_writes_and_syncs_land_in_several_files_at_once() {
        let backend = IoUringBackend::probe().expect("io_uring on this kernel");
        let directory = tempfile::tempdir().unwrap();
        let files: Vec<File> = (0..5)
            .map(|i| {
                File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(directory.path().join(format!("f{i}")))
                    .unwrap()
            })
            .collect();
        let data: Vec<Vec<u8>> = (0..3000u32).map(|i| vec![(i % 251) as u8; 7]).collect();
        let slices: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let jobs: Vec<FileJob<'_>> = files
            .iter()
            .enumerate()
            .map(|(i, file)| FileJob {
                file,
                position: i as u64 * 3,
                buffers: slices.clone(),
                sync: i % 2 == 0,
            })
            .collect();
        let outcomes = backend.run(&jobs);
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        for (i, file) in files.iter().enumerate() {
            let mut read = vec![0u8; 21_000];
            file.read_exact_at(&mut read, i as u64 * 3).unwrap();
            assert_eq!(read, data.concat(), "file {i}");
        }
    }

    #[test]
    fn a_failed_write_is_reported_for_its_job_only() {
        let backend = IoUringBackend::probe().expect("io_uring on this kernel");
        let directory = tempfile::tempdir().unwrap();
        let good = File::create(directory.path().join("good")).unwrap();
        let read_only = File::open(directory.path().join("good")).unwrap();
        let bytes = [1u8; 64];
        let outcomes = backend.run(&[
            FileJob {
                file: &read_only,
                position: 0,
                buffers: vec![&bytes],
                sync: true,
            },
            FileJob {
                file: &good,
                position: 0,
                buffers: vec![&bytes],
                sync: true,
            },
        ]);
        assert!(matches!(outcomes[0], Err(JobError::Write(_))));
        assert!(outcomes[1].is_ok());
    }
}
