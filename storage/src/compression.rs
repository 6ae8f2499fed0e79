//! Record batch compression: Kafka's codecs (attribute bits 0-2), the topic setting
//! `compression.type` with its `compression.<codec>.level`s, and bounded decompression.
//!
//! The codecs are the crates proto-kafka builds on (flate2, lz4, zstd, snap). Compression
//! calls flate2, lz4 and zstd directly because proto-kafka's compressors have fixed levels
//! and Kafka lets a topic choose its level; snappy has no level and goes through proto-kafka
//! (Kafka's xerial framing). Decompression reads through a bound,
//! [`DECOMPRESSED_BATCH_BYTES_MAX`], so a small hostile batch cannot expand without limit in
//! the broker's memory.

use std::fmt;
use std::io::{self, Read, Write};
use std::ops::RangeInclusive;

use bytes::{Bytes, BytesMut};
use proto_kafka::compression::{Compressor, Snappy};

/// Largest decompressed record data of one batch the broker accepts. A stored or produced
/// batch is at most `max.message.bytes` compressed (1 MiB by default); this bounds what a
/// pathological one can expand to in memory, far above any real batch (a 1 MiB batch would
/// need a ratio of 256).
pub const DECOMPRESSED_BATCH_BYTES_MAX: usize = 256 * 1024 * 1024;

/// `compression.gzip.level` when unset: zlib's default (6), Kafka's `-1`.
pub const GZIP_LEVEL_DEFAULT: i32 = -1;
/// Levels `compression.gzip.level` accepts besides -1, Kafka's (zlib's) range.
pub const GZIP_LEVELS: RangeInclusive<i32> = 1..=9;
/// `compression.lz4.level` when unset, Kafka's default (LZ4 high compression).
pub const LZ4_LEVEL_DEFAULT: i32 = 9;
/// Levels `compression.lz4.level` accepts, Kafka's range.
pub const LZ4_LEVELS: RangeInclusive<i32> = 1..=17;
/// `compression.zstd.level` when unset, Kafka's (and zstd's) default.
pub const ZSTD_LEVEL_DEFAULT: i32 = 3;
/// Levels `compression.zstd.level` accepts, Kafka's range (zstd's negative "fast" levels
/// down to -131072, up to 22).
pub const ZSTD_LEVELS: RangeInclusive<i32> = -131_072..=22;

/// A record batch codec, numbered as in a batch's attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    None = 0,
    Gzip = 1,
    Snappy = 2,
    Lz4 = 3,
    Zstd = 4,
}

impl Codec {
    pub const ALL: [Codec; 5] = [
        Codec::None,
        Codec::Gzip,
        Codec::Snappy,
        Codec::Lz4,
        Codec::Zstd,
    ];

    /// The codec of attribute bits 0-2, or `None` for an id Kafka does not define.
    pub fn from_id(id: i16) -> Option<Codec> {
        Codec::ALL.into_iter().find(|codec| *codec as i16 == id)
    }

    pub fn id(self) -> i16 {
        self as i16
    }

    /// The codec's name as a `compression.type` value (`uncompressed` for none).
    pub fn config_name(self) -> &'static str {
        match self {
            Codec::None => "uncompressed",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.config_name())
    }
}

/// A topic's `compression.type`: keep what the producer chose, or store every batch in one
/// codec (recompressing batches that arrive in another).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TopicCompression {
    #[default]
    Producer,
    Codec(Codec),
}

impl TopicCompression {
    /// Parses a `compression.type` value: `producer`, `uncompressed`, `gzip`, `snappy`,
    /// `lz4` or `zstd`.
    pub fn parse(value: &str) -> Option<TopicCompression> {
        if value == "producer" {
            return Some(TopicCompression::Producer);
        }
        Codec::ALL
            .into_iter()
            .find(|codec| codec.config_name() == value)
            .map(TopicCompression::Codec)
    }

    /// The codec a batch that arrived in `source` is stored in.
    pub fn target_for(self, source: Codec) -> Codec {
        match self {
            TopicCompression::Producer => source,
            TopicCompression::Codec(codec) => codec,
        }
    }
}

/// The levels of `compression.gzip.level`, `compression.lz4.level`, `compression.zstd.level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressionLevels {
    pub gzip: i32,
    pub lz4: i32,
    pub zstd: i32,
}

impl Default for CompressionLevels {
    fn default() -> Self {
        CompressionLevels {
            gzip: GZIP_LEVEL_DEFAULT,
            lz4: LZ4_LEVEL_DEFAULT,
            zstd: ZSTD_LEVEL_DEFAULT,
        }
    }
}

/// Why record data could not be compressed or decompressed.
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    #[error("{codec} {operation} failed: {source}")]
    Codec {
        codec: Codec,
        operation: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{codec} record data expands past {limit_bytes} bytes")]
    TooLarge { codec: Codec, limit_bytes: usize },
}

fn codec_error(
    codec: Codec,
    operation: &'static str,
) -> impl FnOnce(io::Error) -> CompressionError {
    move |source| CompressionError::Codec {
        codec,
        operation,
        source,
    }
}

/// Reads `reader` to its end, failing once more than `limit_bytes` come out.
fn read_bounded(
    codec: Codec,
    reader: impl Read,
    limit_bytes: usize,
) -> Result<Vec<u8>, CompressionError> {
    let mut data = Vec::new();
    reader
        .take(limit_bytes as u64 + 1)
        .read_to_end(&mut data)
        .map_err(codec_error(codec, "decompression"))?;
    if data.len() > limit_bytes {
        return Err(CompressionError::TooLarge { codec, limit_bytes });
    }
    Ok(data)
}

/// The record data of a batch body compressed with `codec`, at most `limit_bytes` of it.
/// Uncompressed bodies are returned as they are (no copy).
pub fn decompress(
    codec: Codec,
    body: Bytes,
    limit_bytes: usize,
) -> Result<Bytes, CompressionError> {
    let data = match codec {
        Codec::None => return Ok(body),
        Codec::Gzip => read_bounded(
            codec,
            flate2::read::MultiGzDecoder::new(&body[..]),
            limit_bytes,
        )?,
        Codec::Snappy => snappy::decompress(&body, limit_bytes)?,
        Codec::Lz4 => {
            let decoder =
                lz4::Decoder::new(&body[..]).map_err(codec_error(codec, "decompression"))?;
            read_bounded(codec, decoder, limit_bytes)?
        }
        Codec::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(&body[..])
                .map_err(codec_error(codec, "decompression"))?;
            read_bounded(codec, decoder, limit_bytes)?
        }
    };
    Ok(Bytes::from(data))
}

/// `raw` record data compressed with `codec` at the given levels.
pub fn compress(
    codec: Codec,
    raw: &[u8],
    levels: &CompressionLevels,
) -> Result<Vec<u8>, CompressionError> {
    let failed = codec_error(codec, "compression");
    match codec {
        Codec::None => Ok(raw.to_vec()),
        Codec::Gzip => {
            let level = if levels.gzip == GZIP_LEVEL_DEFAULT {
                flate2::Compression::default()
            } else {
                flate2::Compression::new(levels.gzip.clamp(0, 9) as u32)
            };
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 2), level);
            encoder.write_all(raw).map_err(failed)?;
            encoder.finish().map_err(codec_error(codec, "compression"))
        }
        Codec::Snappy => {
            let mut out = BytesMut::with_capacity(raw.len() / 2 + 64);
            Snappy::compress(&mut out, |buffer: &mut BytesMut| {
                buffer.extend_from_slice(raw);
                Ok(())
            })
            .map_err(|error| failed(io::Error::other(error.to_string())))?;
            Ok(out.to_vec())
        }
        // Kafka's LZ4 frames: independent 64 KiB blocks, no content checksum.
        Codec::Lz4 => {
            let mut encoder = lz4::EncoderBuilder::new()
                .level(levels.lz4.max(0) as u32)
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .checksum(lz4::ContentChecksum::NoChecksum)
                .build(Vec::with_capacity(raw.len() / 2))
                .map_err(failed)?;
            encoder
                .write_all(raw)
                .map_err(codec_error(codec, "compression"))?;
            let (out, finished) = encoder.finish();
            finished.map_err(codec_error(codec, "compression"))?;
            Ok(out)
        }
        Codec::Zstd => zstd::bulk::compress(raw, levels.zstd).map_err(failed),
    }
}

/// Snappy as Kafka's clients write it: the xerial framing (a 16-byte header, then blocks of
/// a 4-byte length and a raw snappy block) or, from some clients, one raw snappy block.
mod snappy {
    use super::{codec_error, Codec, CompressionError};

    /// `\x82SNAPPY\0`, then the xerial version and compatible version (1, 1).
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER_BYTES: usize = 16;
    const BLOCK_LENGTH_BYTES: usize = 4;

    fn corrupt(message: &str) -> CompressionError {
        codec_error(Codec::Snappy, "decompression")(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            message.to_owned(),
        ))
    }

    /// Appends one raw block to `out`, refusing a block that declares more than the bound
    /// allows before anything is allocated for it.
    fn append_block(
        block: &[u8],
        out: &mut Vec<u8>,
        limit_bytes: usize,
    ) -> Result<(), CompressionError> {
        let length =
            snap::raw::decompress_len(block).map_err(|error| corrupt(&error.to_string()))?;
        if out.len() + length > limit_bytes {
            return Err(CompressionError::TooLarge {
                codec: Codec::Snappy,
                limit_bytes,
            });
        }
        let start = out.len();
        out.resize(start + length, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|error| corrupt(&error.to_string()))?;
        Ok(())
    }

    pub(super) fn decompress(body: &[u8], limit_bytes: usize) -> Result<Vec<u8>, CompressionError> {
        let mut out = Vec::new();
        if !body.starts_with(XERIAL_MAGIC) {
            append_block(body, &mut out, limit_bytes)?;
            return Ok(out);
        }
        let mut rest = body
            .get(XERIAL_HEADER_BYTES..)
            .ok_or_else(|| corrupt("truncated xerial header"))?;
        while !rest.is_empty() {
            let (length, after) = rest
                .split_at_checked(BLOCK_LENGTH_BYTES)
                .ok_or_else(|| corrupt("truncated block length"))?;
            let length = u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize;
            let (block, after) = after
                .split_at_checked(length)
                .ok_or_else(|| corrupt("block runs past the batch"))?;
            append_block(block, &mut out, limit_bytes)?;
            rest = after;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|n| (n % 251).to_be_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_at_its_default_level() {
        let raw = sample();
        for codec in Codec::ALL {
            let compressed = compress(codec, &raw, &CompressionLevels::default()).unwrap();
            let restored =
                decompress(codec, Bytes::from(compressed), DECOMPRESSED_BATCH_BYTES_MAX).unwrap();
            assert_eq!(&restored[..], &raw[..], "{codec}");
        }
    }

    #[test]
    fn levels_change_the_compressed_bytes() {
        let raw = sample();
        let fast = CompressionLevels {
            gzip: 1,
            lz4: 1,
            zstd: -5,
        };
        let strong = CompressionLevels {
            gzip: 9,
            lz4: 17,
            zstd: 19,
        };
        for codec in [Codec::Gzip, Codec::Lz4, Codec::Zstd] {
            let fast_bytes = compress(codec, &raw, &fast).unwrap();
            let strong_bytes = compress(codec, &raw, &strong).unwrap();
            assert_ne!(fast_bytes, strong_bytes, "{codec}");
            let restored = decompress(
                codec,
                Bytes::from(strong_bytes),
                DECOMPRESSED_BATCH_BYTES_MAX,
            )
            .unwrap();
            assert_eq!(&restored[..], &raw[..], "{codec}");
        }
    }

    #[test]
    fn decompression_stops_at_the_bound() {
        let raw = vec![0u8; 1 << 20];
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let compressed = compress(codec, &raw, &CompressionLevels::default()).unwrap();
            let error = decompress(codec, Bytes::from(compressed), 1000).unwrap_err();
            assert!(
                matches!(error, CompressionError::TooLarge { .. }),
                "{codec}: {error}"
            );
        }
    }

    #[test]
    fn an_lz4_frame_with_linked_blocks_is_read() {
        // What lz4js writes by default; Kafka's own reader refuses it, liblz4's reads it.
        let raw = sample();
        let mut encoder = lz4::EncoderBuilder::new()
            .block_mode(lz4::BlockMode::Linked)
            .build(Vec::new())
            .unwrap();
        encoder.write_all(&raw).unwrap();
        let (linked, finished) = encoder.finish();
        finished.unwrap();
        let restored = decompress(
            Codec::Lz4,
            Bytes::from(linked),
            DECOMPRESSED_BATCH_BYTES_MAX,
        )
        .unwrap();
        assert_eq!(&restored[..], &raw[..]);
    }

    #[test]
    fn raw_snappy_without_framing_is_read() {
        let raw = sample();
        let block = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        let restored = decompress(
            Codec::Snappy,
            Bytes::from(block),
            DECOMPRESSED_BATCH_BYTES_MAX,
        )
        .unwrap();
        assert_eq!(&restored[..], &raw[..]);
    }

    #[test]
    fn compression_type_names_are_kafkas() {
        assert_eq!(
            TopicCompression::parse("producer"),
            Some(TopicCompression::Producer)
        );
        assert_eq!(
            TopicCompression::parse("uncompressed"),
            Some(TopicCompression::Codec(Codec::None))
        );
        assert_eq!(
            TopicCompression::parse("zstd"),
            Some(TopicCompression::Codec(Codec::Zstd))
        );
        assert_eq!(TopicCompression::parse("none"), None);
        assert_eq!(
            TopicCompression::Producer.target_for(Codec::Lz4),
            Codec::Lz4
        );
        assert_eq!(
            TopicCompression::Codec(Codec::Zstd).target_for(Codec::Lz4),
            Codec::Zstd
        );
    }
}
