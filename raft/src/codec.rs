//! Versioned rkyv encoding for everything this crate persists or sends.
//!
//! Every encoded value is `[format version: u8][rkyv archive]`. The version byte sits outside
//! the archive so a reader can refuse (or later migrate) a format it does not know before it
//! trusts a single archived byte. Archives are validated (`bytecheck`) on decode, so a corrupt
//! or hostile buffer is an error, never undefined behaviour.
//!
//! A type's archive layout changes when a field or variant is added anywhere inside it, and
//! rkyv would then misread old bytes rather than refuse them. So every decoded type states
//! ([`Layout::SINCE`]) the oldest version laid out as it is now, and [`decode`] refuses
//! anything older; a migrating reader (`crate::format_v1`) decodes those with the frozen
//! shapes of their version and converts them.
//!
//! rkyv needs the archive aligned; bytes read from a file or socket are copied into an
//! [`AlignedVec`] first. The copy is cheap next to the fsync or network hop around it.

use std::io;

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::de::Pool;
use rkyv::rancor::{self, Strategy};
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// Format of the log entries, vote file, snapshots and wire messages this build writes.
///
/// 1: the first. 2: partitions carry a reassignment's adding and removing replicas
/// (`PartitionImage`, `MetadataRecord::PartitionChange`); entries and images of version 1
/// are read through `crate::format_v1`.
pub const FORMAT_VERSION: u8 = 2;

/// Since which format version a type's archive has had its present layout.
pub trait Layout {
    /// Bytes of an older version are refused by [`decode`], never misread.
    const SINCE: u8;
}

/// Encodes `value` as `[FORMAT_VERSION][archive]`.
pub fn encode<T>(value: &T) -> io::Result<Vec<u8>>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    let archive = rkyv::to_bytes::<rancor::Error>(value).map_err(io::Error::other)?;
    let mut bytes = Vec::with_capacity(1 + archive.len());
    bytes.push(FORMAT_VERSION);
    bytes.extend_from_slice(&archive);
    Ok(bytes)
}

/// Decodes what [`encode`] wrote. A version this build does not know, one older than `T`'s
/// layout, or an invalid archive is `InvalidData`.
pub fn decode<T>(bytes: &[u8]) -> io::Result<T>
where
    T: Archive + Layout,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, Strategy<Pool, rancor::Error>>,
{
    let (version, archive) = split_version(bytes)?;
    if version < T::SINCE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "format version {version} of {} needs migrating (laid out as now since {})",
                std::any::type_name::<T>(),
                T::SINCE
            ),
        ));
    }
    decode_archive(archive)
}

/// The version byte and the archive after it; an unknown version is `InvalidData`.
pub(crate) fn split_version(bytes: &[u8]) -> io::Result<(u8, &[u8])> {
    let Some((&version, archive)) = bytes.split_first() else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "empty record"));
    };
    if version == 0 || version > FORMAT_VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unknown format version {version} (this build reads 1..={FORMAT_VERSION})"),
        ));
    }
    Ok((version, archive))
}

/// Decodes an archive (without its version byte) as `T`, checking it first.
pub(crate) fn decode_archive<T>(archive: &[u8]) -> io::Result<T>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, Strategy<Pool, rancor::Error>>,
{
    let mut aligned = AlignedVec::<16>::with_capacity(archive.len());
    aligned.extend_from_slice(archive);
    rkyv::from_bytes::<T, rancor::Error>(&aligned)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{MetadataBatch, MetadataRecord};

    #[test]
    fn round_trips_and_refuses_unknown_versions_and_garbage() {
        let batch = MetadataBatch::new(vec![MetadataRecord::Config {
            topic: "orders".into(),
            name: "retention.ms".into(),
            value: Some("1000".into()),
        }]);
        let mut bytes = encode(&batch).unwrap();
        assert_eq!(decode::<MetadataBatch>(&bytes).unwrap(), batch);

        let mut garbage = bytes.clone();
        garbage.truncate(garbage.len() / 2);
        assert!(decode::<MetadataBatch>(&garbage).is_err());

        bytes[0] = FORMAT_VERSION + 1;
        let error = decode::<MetadataBatch>(&bytes).unwrap_err();
        assert!(
            error.to_string().contains("unknown format version"),
            "{error}"
        );

        bytes[0] = 1;
        let error = decode::<MetadataBatch>(&bytes).unwrap_err();
        assert!(error.to_string().contains("needs migrating"), "{error}");
    }
}
