//! Reading a segment back at open: every whole record, where a torn tail
//! starts, and damaged records skipped by resynchronizing on the next header.

use super::*;

/// What a scan of a segment found.
pub(super) struct Scan {
    /// Length of the prefix that ends with a valid record.
    pub(super) valid_len: u64,
    pub(super) records: Vec<(u64, u32)>,
    /// Damaged records between valid ones (skipped by readers).
    pub(super) corrupt: u64,
    /// Window keys of the events, with their receive times.
    pub(super) hashes: Vec<(u64, i64)>,
}

/// Reads the record starting at `offset` of `bytes`, if it is whole and valid.
pub(super) fn decode_at(bytes: &[u8], offset: usize) -> Option<(record::Header, &[u8])> {
    let h = bytes.get(offset..offset + HEADER)?;
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if u32_at(0) != MAGIC {
        return None;
    }
    let mut b8 = [0u8; 8];
    b8.copy_from_slice(&h[12..20]);
    let seq = u64::from_le_bytes(b8);
    b8.copy_from_slice(&h[20..28]);
    let received_ms = i64::from_le_bytes(b8);
    let len = u32_at(4);
    let payload = bytes.get(offset + HEADER..offset + HEADER + len as usize)?;
    (checksum(seq, received_ms, payload) == u32_at(8)).then_some((
        record::Header {
            len,
            crc: u32_at(8),
            seq,
            received_ms,
        },
        payload,
    ))
}

/// The next valid record at or after `from`: resynchronises past damage.
pub(super) fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    let magic = MAGIC.to_le_bytes();
    let mut at = from;
    while let Some(i) = memchr::memmem::find(&bytes[at..], &magic) {
        if decode_at(bytes, at + i).is_some() {
            return Some(at + i);
        }
        at += i + 1;
    }
    None
}

/// Validates a segment: the records in it, the length of its valid prefix, and
/// how many damaged records lie between valid ones.
pub(super) fn scan_segment(path: &Path) -> io::Result<Scan> {
    let bytes = std::fs::read(path)?;
    let mut scan = Scan {
        valid_len: 0,
        records: Vec::new(),
        corrupt: 0,
        hashes: Vec::new(),
    };
    let mut at = 0usize;
    while at < bytes.len() {
        match decode_at(&bytes, at) {
            Some((h, payload)) => {
                let mut n = 0u32;
                for (meta, _) in entries::iter(payload) {
                    n += 1;
                    if let Some(key) = crate::trace::meta_key(meta) {
                        scan.hashes.push((key, h.received_ms));
                    }
                }
                scan.records.push((h.seq, n));
                at += HEADER + h.len as usize;
                scan.valid_len = at as u64;
            }
            None => match resync(&bytes, at + 1) {
                Some(next) => {
                    scan.corrupt += 1;
                    at = next;
                }
                // Nothing valid after it: a torn tail.
                None => break,
            },
        }
    }
    Ok(scan)
}
