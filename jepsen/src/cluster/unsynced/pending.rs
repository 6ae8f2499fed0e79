//! The bytes written to one file and not yet synced: non-overlapping extents keyed by their
//! file offset. A later write replaces the overlapped parts of earlier ones, as it would in a
//! page cache; reads lay the extents over what the backing file holds.

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct PendingWrites {
    /// Start offset → bytes; no two extents overlap.
    extents: BTreeMap<u64, Vec<u8>>,
    /// Sum of the extents' lengths (kept, not recomputed, for the filesystem's limit).
    bytes: u64,
}

impl PendingWrites {
    /// Bytes held (what a crash would drop).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// The offset after the last pending byte: the file is at least this long.
    pub fn end(&self) -> u64 {
        self.extents
            .iter()
            .next_back()
            .map_or(0, |(start, bytes)| start + bytes.len() as u64)
    }

    /// Records `data` written at `offset`, replacing what earlier writes left there.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        self.cut(offset, end);
        self.bytes += data.len() as u64;
        self.extents.insert(offset, data.to_vec());
    }

    /// Drops every pending byte at or after `size` (the file was truncated to `size`).
    pub fn truncate(&mut self, size: u64) {
        self.cut(size, u64::MAX);
    }

    /// Copies the pending bytes of `[offset, offset + buffer.len())` into `buffer`.
    pub fn overlay(&self, offset: u64, buffer: &mut [u8]) {
        let end = offset + buffer.len() as u64;
        for (start, bytes) in self.overlapping(offset, end) {
            let from = offset.max(start);
            let to = end.min(start + bytes.len() as u64);
            buffer[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
        }
    }

    /// Takes every extent out, in offset order (to be written to the backing file at a sync).
    pub fn take(&mut self) -> BTreeMap<u64, Vec<u8>> {
        self.bytes = 0;
        std::mem::take(&mut self.extents)
    }

    /// Extents that overlap `[offset, end)`, as (start, bytes).
    fn overlapping(&self, offset: u64, end: u64) -> impl Iterator<Item = (u64, &Vec<u8>)> {
        // Extents are disjoint and sorted, so their ends rise with their starts: walking back
        // from the last start before `end`, stop at the first that ends at or before `offset`.
        self.extents
            .range(..end)
            .rev()
            .take_while(move |(start, bytes)| *start + bytes.len() as u64 > offset)
            .map(|(start, bytes)| (*start, bytes))
    }

    /// Removes `[offset, end)` from the extents, keeping the parts of each outside it.
    fn cut(&mut self, offset: u64, end: u64) {
        let starts: Vec<u64> = self
            .overlapping(offset, end)
            .map(|(start, _)| start)
            .collect();
        for start in starts {
            let bytes = self.extents.remove(&start).expect("an extent just found");
            self.bytes -= bytes.len() as u64;
            let extent_end = start + bytes.len() as u64;
            if start < offset {
                let kept = bytes[..(offset - start) as usize].to_vec();
                self.bytes += kept.len() as u64;
                self.extents.insert(start, kept);
            }
            if extent_end > end {
                let kept = bytes[(end - start) as usize..].to_vec();
                self.bytes += kept.len() as u64;
                self.extents.insert(end, kept);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pending: &PendingWrites, offset: u64, length: usize) -> Vec<u8> {
        let mut buffer = vec![b'.'; length];
        pending.overlay(offset, &mut buffer);
        buffer
    }

    #[test]
    fn a_later_write_replaces_the_overlapped_middle_of_an_earlier_one() {
        let mut pending = PendingWrites::default();
        pending.write(0, b"aaaaaaaa");
        pending.write(2, b"bbb");
        assert_eq!(read(&pending, 0, 10), b"aabbbaaa..");
        assert_eq!(pending.bytes(), 8);
        assert_eq!(pending.end(), 8);
    }

    #[test]
    fn a_write_over_several_extents_keeps_their_outer_parts() {
        let mut pending = PendingWrites::default();
        pending.write(0, b"aaa");
        pending.write(4, b"ccc");
        pending.write(2, b"XXX");
        assert_eq!(read(&pending, 0, 8), b"aaXXXcc.");
        assert_eq!(pending.bytes(), 7);
    }

    #[test]
    fn a_read_inside_one_extent_sees_only_its_part() {
        let mut pending = PendingWrites::default();
        pending.write(10, b"0123456789");
        assert_eq!(read(&pending, 12, 3), b"234");
        assert_eq!(read(&pending, 5, 7), b".....01");
    }

    #[test]
    fn truncation_drops_the_pending_bytes_beyond_the_new_size() {
        let mut pending = PendingWrites::default();
        pending.write(0, b"aaaa");
        pending.write(8, b"bbbb");
        pending.truncate(2);
        assert_eq!(pending.end(), 2);
        assert_eq!(pending.bytes(), 2);
        assert_eq!(read(&pending, 0, 4), b"aa..");
    }

    #[test]
    fn taking_the_extents_leaves_nothing_pending() {
        let mut pending = PendingWrites::default();
        pending.write(3, b"xy");
        let taken = pending.take();
        assert_eq!(taken.get(&3).map(Vec::as_slice), Some(&b"xy"[..]));
        assert!(pending.is_empty());
        assert_eq!(pending.bytes(), 0);
    }
}
