//! The single-node metadata journal: one JSON line per committed group of records, each
//! line written and fdatasynced before the commit is acknowledged.
//!
//! Replay stops at a torn last line (a crash mid-append: that commit was never
//! acknowledged) and truncates it; a damaged line followed by more lines is corruption and
//! stops start-up.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::MetadataRecord;

pub const FILE_NAME: &str = "metadata.journal";
const FORMAT_VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Entry {
    version: u8,
    records: Vec<MetadataRecord>,
}

pub struct Journal {
    file: File,
}

impl Journal {
    pub fn open(path: &Path) -> anyhow::Result<(Journal, Vec<MetadataRecord>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("opening metadata journal {}", path.display()))?;
        let mut text = String::new();
        file.read_to_string(&mut text)
            .with_context(|| format!("reading metadata journal {}", path.display()))?;
        let mut records = Vec::new();
        let mut valid_bytes = 0;
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        for (index, line) in lines.iter().enumerate() {
            let complete = line.ends_with('\n');
            match serde_json::from_str::<Entry>(line.trim_end()) {
                Ok(entry) if complete && entry.version == FORMAT_VERSION => {
                    records.extend(entry.records);
                    valid_bytes += line.len();
                }
                Ok(entry) if complete => bail!(
                    "metadata journal {} line {}: unknown format version {}",
                    path.display(),
                    index + 1,
                    entry.version
                ),
                _ if index + 1 == lines.len() => {
                    tracing::warn!(path = %path.display(), "metadata journal: dropping a torn last entry");
                    file.set_len(valid_bytes as u64)?;
                    file.sync_all()?;
                }
                Err(error) => bail!(
                    "metadata journal {} is corrupt at line {}: {error}",
                    path.display(),
                    index + 1
                ),
                Ok(_) => unreachable!("complete lines are handled above"),
            }
        }
        Ok((Journal { file }, records))
    }

    pub fn append(&mut self, records: &[MetadataRecord]) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(&Entry {
            version: FORMAT_VERSION,
            records: records.to_vec(),
        })
        .map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()
    }
}
