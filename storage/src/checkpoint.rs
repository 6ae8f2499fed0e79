//! Offset checkpoint files in Kafka's text format (`recovery-point-offset-checkpoint`,
//! `log-start-offset-checkpoint`): a version line `0`, a count line, then one
//! `<topic> <partition> <offset>` line per partition. Written atomically (temp file, fsync,
//! rename, directory fsync) so a crash leaves either the old or the new file.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use crate::io::sync_directory;
use crate::types::{Offset, TopicPartition};

const VERSION: &str = "0";

pub fn write(path: &Path, entries: &HashMap<TopicPartition, Offset>) -> io::Result<()> {
    let mut text = format!("{VERSION}\n{}\n", entries.len());
    let mut sorted: Vec<_> = entries.iter().collect();
    sorted.sort();
    for (partition, offset) in sorted {
        text.push_str(&format!(
            "{} {} {}\n",
            partition.topic, partition.partition, offset.0
        ));
    }
    write_atomically(path, &text)
}

/// Replaces `path` with `text` so that a crash leaves either the old or the new file: a
/// temporary file written and synced, renamed over it, and the directory synced.
pub fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    sync_directory(path.parent().unwrap_or(Path::new(".")))
}

/// Reads a checkpoint; a missing file is empty. A malformed file is an error naming the line.
pub fn read(path: &Path) -> io::Result<HashMap<TopicPartition, Offset>> {
    let lines = read_entry_lines(path)?;
    let count = lines.len();
    let malformed = |what: &str| malformed(path, what);
    let mut entries = HashMap::with_capacity(count);
    for line in &lines {
        let mut fields = line.split(' ');
        let (Some(topic), Some(partition), Some(offset), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(malformed(&format!("bad line {line:?}")));
        };
        let partition = partition
            .parse()
            .map_err(|_| malformed(&format!("bad partition in {line:?}")))?;
        let offset = offset
            .parse()
            .map_err(|_| malformed(&format!("bad offset in {line:?}")))?;
        entries.insert(TopicPartition::new(topic, partition), Offset(offset));
    }
    if entries.len() != count {
        return Err(malformed("a partition is listed twice"));
    }
    Ok(entries)
}

/// The entry lines of a file in the checkpoint text format (a version line `0`, a count
/// line, then that many entries), shared by the offset checkpoints and the leader-epoch
/// checkpoint. A missing file has no entries; fewer lines than announced is an error.
pub(crate) fn read_entry_lines(path: &Path) -> io::Result<Vec<String>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut lines = text.lines();
    if lines.next() != Some(VERSION) {
        return Err(malformed(path, "unknown version"));
    }
    let count: usize = lines
        .next()
        .and_then(|line| line.trim().parse().ok())
        .ok_or_else(|| malformed(path, "bad entry count"))?;
    let entries: Vec<String> = lines.take(count).map(str::to_owned).collect();
    if entries.len() != count {
        return Err(malformed(path, "fewer entries than announced"));
    }
    Ok(entries)
}

/// A checkpoint file that cannot be what was written: an error naming the file and what.
pub(crate) fn malformed(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("recovery-point-offset-checkpoint");
        let mut entries = HashMap::new();
        entries.insert(TopicPartition::new("orders", 0), Offset(17));
        entries.insert(TopicPartition::new("a-b", 3), Offset(0));
        write(&path, &entries).unwrap();
        assert_eq!(read(&path).unwrap(), entries);
        assert!(read(&directory.path().join("missing")).unwrap().is_empty());
    }
}
