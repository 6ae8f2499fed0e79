//! The leader-epoch cache of one log: for every leader epoch that wrote to the log, the
//! first offset it wrote (`leader-epoch-checkpoint` in the log's directory, Kafka's text
//! format: a version line `0`, a count line, then `<epoch> <start offset>` lines).
//!
//! It answers OffsetForLeaderEpoch: where did epoch E end in this log? A follower (or a
//! returning old leader) truncates to that answer instead of to its high watermark, which
//! is what keeps replicas from diverging after leader changes (Kafka's KIP-101/KIP-279).
//!
//! Durability: an entry is written (file synced, renamed, directory synced) *before* the
//! first batch of its epoch is planned, so every epoch present in the log is in the file.
//! The file may name epochs whose first batch never reached the disk; opening the log
//! drops entries at or past its end.

use std::io;
use std::path::{Path, PathBuf};

use crate::types::{LeaderEpoch, Offset};

pub const EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const VERSION: &str = "0";

/// What OffsetForLeaderEpoch answers for one requested epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochEnd {
    /// The largest epoch at or below the requested one that this log knows (-1: none).
    pub epoch: LeaderEpoch,
    /// The first offset after that epoch's records (-1 with an unknown epoch).
    pub end_offset: Offset,
}

impl EpochEnd {
    pub const UNDEFINED: EpochEnd = EpochEnd {
        epoch: LeaderEpoch(-1),
        end_offset: Offset(-1),
    };
}

#[derive(Debug)]
pub struct EpochCache {
    path: PathBuf,
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(LeaderEpoch, Offset)>,
}

impl EpochCache {
    /// Loads the cache of the log in `dir` and drops what lies at or past `log_end_offset`
    /// (epochs whose first batch did not survive a crash, or was truncated).
    pub fn open(dir: &Path, log_end_offset: Offset) -> io::Result<EpochCache> {
        let path = dir.join(EPOCH_CHECKPOINT_FILE);
        let mut cache = EpochCache {
            entries: read(&path)?,
            path,
        };
        cache.truncate_from(log_end_offset)?;
        Ok(cache)
    }

    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.entries.last().map(|(epoch, _)| *epoch)
    }

    pub fn entries(&self) -> &[(LeaderEpoch, Offset)] {
        &self.entries
    }

    /// Records that `epoch` writes from `start_offset` on, persisting it before returning.
    /// Epochs only rise: an older one than the latest is refused (a stale leader's write).
    pub fn assign(&mut self, epoch: LeaderEpoch, start_offset: Offset) -> io::Result<()> {
        match self.entries.last() {
            Some((latest, _)) if *latest == epoch => return Ok(()),
            Some((latest, _)) if *latest > epoch => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "leader epoch {} is older than the log's latest epoch {}",
                        epoch.0, latest.0
                    ),
                ))
            }
            _ => {}
        }
        self.entries.push((epoch, start_offset));
        self.persist()
    }

    /// Where `requested` ended in this log whose end is `log_end_offset`: the largest known
    /// epoch at or below it and the start of the next epoch (or the log end if it is the
    /// latest). An epoch below every known one is undefined.
    pub fn end_for(&self, requested: LeaderEpoch, log_end_offset: Offset) -> EpochEnd {
        let position = self
            .entries
            .partition_point(|(epoch, _)| *epoch <= requested);
        if position == 0 {
            return EpochEnd::UNDEFINED;
        }
        let (epoch, _) = self.entries[position - 1];
        let end_offset = self
            .entries
            .get(position)
            .map_or(log_end_offset, |(_, next_start)| *next_start);
        EpochEnd { epoch, end_offset }
    }

    /// Drops every entry starting at or after `offset` (the log was truncated there).
    pub fn truncate_from(&mut self, offset: Offset) -> io::Result<()> {
        let keep = self.entries.partition_point(|(_, start)| *start < offset);
        if keep == self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(keep);
        self.persist()
    }

    fn persist(&self) -> io::Result<()> {
        let mut text = format!("{VERSION}\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{} {}\n", epoch.0, start.0));
        }
        crate::checkpoint::write_atomically(&self.path, &text)
    }
}

fn read(path: &Path) -> io::Result<Vec<(LeaderEpoch, Offset)>> {
    let lines = crate::checkpoint::read_entry_lines(path)?;
    let malformed = |what: &str| crate::checkpoint::malformed(path, what);
    let mut entries: Vec<(LeaderEpoch, Offset)> = Vec::with_capacity(lines.len());
    for line in &lines {
        let mut fields = line.split(' ');
        let (Some(epoch), Some(start), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(malformed(&format!("bad line {line:?}")));
        };
        let epoch = LeaderEpoch(epoch.parse().map_err(|_| malformed("bad epoch"))?);
        let start = Offset(start.parse().map_err(|_| malformed("bad offset"))?);
        if entries
            .last()
            .is_some_and(|(e, s)| *e >= epoch || *s > start)
        {
            return Err(malformed("entries out of order"));
        }
        entries.push((epoch, start));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_ends_where_the_next_one_starts_and_the_latest_at_the_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EpochCache::open(dir.path(), Offset(0)).unwrap();
        cache.assign(LeaderEpoch(0), Offset(0)).unwrap();
        cache.assign(LeaderEpoch(2), Offset(10)).unwrap();
        cache.assign(LeaderEpoch(5), Offset(25)).unwrap();
        let end = |epoch| cache.end_for(LeaderEpoch(epoch), Offset(40));
        assert_eq!(end(0).end_offset, Offset(10));
        // Epoch 1 never wrote here: the answer is the largest epoch below it, 0.
        assert_eq!(
            end(1),
            EpochEnd {
                epoch: LeaderEpoch(0),
                end_offset: Offset(10)
            }
        );
        assert_eq!(end(4).end_offset, Offset(25));
        assert_eq!(end(5).end_offset, Offset(40));
        assert_eq!(end(9).epoch, LeaderEpoch(5));
        assert_eq!(end(-1), EpochEnd::UNDEFINED);
    }

    #[test]
    fn reopening_drops_epochs_that_start_past_the_recovered_log_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EpochCache::open(dir.path(), Offset(0)).unwrap();
        cache.assign(LeaderEpoch(1), Offset(0)).unwrap();
        cache.assign(LeaderEpoch(3), Offset(7)).unwrap();
        let reopened = EpochCache::open(dir.path(), Offset(7)).unwrap();
        assert_eq!(reopened.entries(), &[(LeaderEpoch(1), Offset(0))]);
        let again = EpochCache::open(dir.path(), Offset(7)).unwrap();
        assert_eq!(again.latest_epoch(), Some(LeaderEpoch(1)));
    }

    #[test]
    fn an_older_epoch_cannot_write_after_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EpochCache::open(dir.path(), Offset(0)).unwrap();
        cache.assign(LeaderEpoch(4), Offset(0)).unwrap();
        assert!(cache.assign(LeaderEpoch(3), Offset(5)).is_err());
        cache.assign(LeaderEpoch(4), Offset(5)).unwrap();
        assert_eq!(cache.entries().len(), 1);
    }
}
