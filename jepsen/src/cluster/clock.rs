//! A node's wall clock under libfaketime: the offset file it reads, and the strobe that flips
//! that offset back and forth.
//!
//! Nodes run with `FAKETIME_NO_CACHE=1`, so libfaketime reads the file at every
//! CLOCK_REALTIME call (a few microseconds each; with `DONT_FAKE_MONOTONIC=1` the monotonic
//! clock is not faked and reads no file). Every write is a rename of a complete file, so a
//! read never sees a half-written offset.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

/// Writes `seconds` (from the true time) into libfaketime's offset file, atomically.
pub fn write_offset(path: &Path, seconds: i64) -> anyhow::Result<()> {
    let temporary = path.with_extension("rc.new");
    std::fs::write(&temporary, format!("{seconds:+}\n"))
        .with_context(|| format!("write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("rename into {}", path.display()))
}

/// A thread that moves one node's clock between `offset_seconds` and 0 every `period` until
/// stopped, and leaves it at 0.
pub struct Strobe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<u64>>>,
}

impl Strobe {
    pub fn start(path: PathBuf, offset_seconds: i64, period: Duration) -> Strobe {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || -> anyhow::Result<u64> {
            let mut flips = 0;
            while !stopping.load(Ordering::Relaxed) {
                let seconds = if flips % 2 == 0 { offset_seconds } else { 0 };
                write_offset(&path, seconds)?;
                flips += 1;
                std::thread::sleep(period);
            }
            write_offset(&path, 0)?;
            Ok(flips)
        });
        Strobe {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the strobe (the clock is back at offset 0 when this returns); the number of
    /// changes it made.
    pub fn stop(mut self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().expect("a running strobe").join() {
            Ok(result) => result,
            Err(_) => anyhow::bail!("the clock strobe thread panicked"),
        }
    }
}

impl Drop for Strobe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strobe_flips_the_offset_and_leaves_it_at_zero() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("faketime.rc");
        write_offset(&path, 7).expect("write");
        let strobe = Strobe::start(path.clone(), -42, Duration::from_millis(5));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            seen.insert(std::fs::read_to_string(&path).expect("read"));
            if seen.contains("-42\n") && seen.contains("+0\n") {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let flips = strobe.stop().expect("stop");
        assert!(flips >= 2, "only {flips} flips");
        assert!(
            seen.contains("-42\n") && seen.contains("+0\n"),
            "saw {seen:?}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "+0\n");
    }
}
