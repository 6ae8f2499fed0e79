//! Small whole-file records replaced atomically: the log state (vote, purge point), the
//! committed log id and the snapshot.
//!
//! A file is `[crc32c of the rest: u32 LE][payload]`, written to `NAME.tmp` and renamed over
//! `NAME`. With `Durability::Synced` the temporary file is fdatasynced before the rename and
//! the directory after it, so once [`replace`] returns the new contents survive a power loss.
//! With `Durability::Eventual` a crash may leave the old contents, or (on file systems that
//! reorder the rename before the data) a file that fails its CRC, which [`read`] reports as
//! `Ok(None)` *only* when the caller said that is acceptable; see [`read`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The contents are on disk when `replace` returns.
    Synced,
    /// Losing the update in a crash is harmless (a hint such as the committed log id).
    Eventual,
}

/// Replaces `dir/name` with `payload`.
pub fn replace(dir: &Path, name: &str, payload: &[u8], durability: Durability) -> io::Result<()> {
    let path = dir.join(name);
    let temporary = dir.join(format!("{name}.tmp"));
    let mut bytes = Vec::with_capacity(4 + payload.len());
    bytes.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)?;
        file.write_all(&bytes)?;
        if durability == Durability::Synced {
            file.sync_data()?;
        }
    }
    fs::rename(&temporary, &path)?;
    if durability == Durability::Synced {
        sync_directory(dir)?;
    }
    Ok(())
}

/// Reads `dir/name`. `Ok(None)` if it does not exist. A file that fails its CRC is an error
/// unless `tolerate_damage` (for files written with `Durability::Eventual`), then `Ok(None)`.
pub fn read(dir: &Path, name: &str, tolerate_damage: bool) -> io::Result<Option<Vec<u8>>> {
    let path = dir.join(name);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let intact = bytes.len() >= 4 && {
        let (crc, payload) = bytes.split_at(4);
        u32::from_le_bytes(crc.try_into().expect("4 bytes")) == crc32c::crc32c(payload)
    };
    match (intact, tolerate_damage) {
        (true, _) => Ok(Some(bytes[4..].to_vec())),
        (false, true) => {
            tracing::warn!(path = %path.display(), "ignoring a damaged hint file");
            Ok(None)
        }
        (false, false) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} fails its checksum", path.display()),
        )),
    }
}

/// Makes a rename or file creation in `dir` durable.
pub fn sync_directory(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_contents_read_back_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), "state", false).unwrap(), None);
        replace(dir.path(), "state", b"vote 3", Durability::Synced).unwrap();
        replace(dir.path(), "state", b"vote 4", Durability::Synced).unwrap();
        assert_eq!(
            read(dir.path(), "state", false).unwrap().unwrap(),
            b"vote 4"
        );

        fs::write(dir.path().join("state"), b"\0\0\0\0vote 5").unwrap();
        assert!(read(dir.path(), "state", false).is_err());
        assert_eq!(read(dir.path(), "state", true).unwrap(), None);
    }
}
