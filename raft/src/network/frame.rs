//! Length-prefixed frames on the controller listener: `[length: u32 BE][payload]`, where the
//! payload is a [`crate::codec`] value (version byte + rkyv archive).

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted in either direction. The biggest frames are full snapshots of the
/// metadata image (about 100 bytes per partition: 1,000,000 partitions fit); a larger length
/// prefix is damage or hostility and closes the connection before anything is allocated.
/// Images beyond this need chunked snapshot transfer.
pub const FRAME_BYTES_MAX: usize = 128 * 1024 * 1024;

/// Reads one frame. `Ok(None)` if the peer closed the connection cleanly between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let length = u32::from_be_bytes(length) as usize;
    if length > FRAME_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {length} bytes exceeds {FRAME_BYTES_MAX}"),
        ));
    }
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await?;
    Ok(Some(payload))
}

pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, payload: &[u8]) -> io::Result<()> {
    if payload.len() > FRAME_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes exceeds {FRAME_BYTES_MAX}", payload.len()),
        ));
    }
    writer
        .write_all(&(payload.len() as u32).to_be_bytes())
        .await?;
    writer.write_all(payload).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_lengths_are_refused() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, b"hello").await.unwrap();
        let mut reader = buffer.as_slice();
        assert_eq!(read_frame(&mut reader).await.unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut reader).await.unwrap(), None);

        let hostile = (u32::MAX).to_be_bytes();
        let error = read_frame(&mut hostile.as_slice()).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
