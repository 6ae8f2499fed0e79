//! A response on its way to the socket: encoded bytes, and file regions that are sent
//! straight from the page cache with `sendfile(2)` (zero-copy fetch).

use std::os::fd::AsRawFd;
use std::sync::Arc;

use bytes::Bytes;
use karst_storage::segment::SegmentFile;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::tcp::OwnedWriteHalf;

/// One piece of a response.
pub enum Chunk {
    Bytes(Bytes),
    /// `length` bytes of `file` from `position`, sent without passing through user space.
    File {
        file: Arc<SegmentFile>,
        position: u64,
        length: usize,
    },
}

/// A complete response frame, length prefix included, in pieces.
pub struct ResponseFrame {
    pub chunks: Vec<Chunk>,
}

impl From<Bytes> for ResponseFrame {
    fn from(bytes: Bytes) -> ResponseFrame {
        ResponseFrame {
            chunks: vec![Chunk::Bytes(bytes)],
        }
    }
}

impl ResponseFrame {
    pub fn len(&self) -> usize {
        self.chunks
            .iter()
            .map(|chunk| match chunk {
                Chunk::Bytes(bytes) => bytes.len(),
                Chunk::File { length, .. } => *length,
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes every chunk in order.
    pub async fn write_to(&self, writer: &mut OwnedWriteHalf) -> std::io::Result<()> {
        for chunk in &self.chunks {
            match chunk {
                Chunk::Bytes(bytes) => writer.write_all(bytes).await?,
                Chunk::File {
                    file,
                    position,
                    length,
                } => send_file(writer, file, *position, *length).await?,
            }
        }
        Ok(())
    }
}

/// `sendfile` from `file` into the socket until `length` bytes went out.
async fn send_file(
    writer: &mut OwnedWriteHalf,
    file: &SegmentFile,
    position: u64,
    length: usize,
) -> std::io::Result<()> {
    let stream = writer.as_ref();
    let mut offset = position as libc::off_t;
    let end = position as libc::off_t + length as libc::off_t;
    while offset < end {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let remaining = (end - offset) as usize;
            // SAFETY: both descriptors are open for the duration of the call (the segment
            // file is kept alive by its Arc, the socket by `writer`); `offset` is a valid
            // pointer to a local.
            let sent = unsafe {
                libc::sendfile(
                    stream.as_raw_fd(),
                    file.file.as_raw_fd(),
                    &mut offset,
                    remaining,
                )
            };
            if sent < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(sent as usize)
            }
        });
        match sent {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} ended before byte {end}", file.path.display()),
                ))
            }
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
