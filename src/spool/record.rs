//! The spool's on-disk record codec, in one place.
//!
//! A record is `magic u32 | len u32 | crc32 u32 | seq u64 | received_ms i64 | payload`
//! (little endian); the CRC covers seq, received_ms and payload. A payload holds
//! the traces of one webhook batch, each as `len u32 | routing metadata (JSON) |
//! len u32 | trace line (JSON)`.

use std::fs::File;
use std::io::{self, Read};

pub const MAGIC: u32 = 0x4b54_524c;
pub const HEADER: usize = 28;

/// A record header as read from disk.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub len: u32,
    pub crc: u32,
    pub seq: u64,
    pub received_ms: i64,
}

pub fn checksum(seq: u64, received_ms: i64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&received_ms.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Appends one encoded record to `buf`.
pub fn encode(buf: &mut Vec<u8>, seq: u64, received_ms: i64, payload: &[u8]) {
    buf.extend_from_slice(&MAGIC.to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&checksum(seq, received_ms, payload).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&received_ms.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Reads a record header; `None` at a clean end of file. A torn header is
/// `UnexpectedEof`, a wrong magic `InvalidData`.
pub fn read_header(f: &mut File) -> io::Result<Option<Header>> {
    let mut h = [0u8; HEADER];
    let mut got = 0;
    while got < HEADER {
        let n = f.read(&mut h[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(io::Error::new(io::ErrorKind::UnexpectedEof, "torn record header"))
            };
        }
        got += n;
    }
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[i..i + 8]);
        u64::from_le_bytes(b)
    };
    if u32_at(0) != MAGIC {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad record magic"));
    }
    Ok(Some(Header {
        len: u32_at(4),
        crc: u32_at(8),
        seq: u64_at(12),
        received_ms: u64_at(20) as i64,
    }))
}

/// The payload of a spool record: the traces of one webhook batch, each as its
/// routing metadata (JSON) and its trace line (JSON without the `tracker` field).
pub mod entries {
    /// Appends one entry to a payload.
    pub fn push(payload: &mut Vec<u8>, meta: &[u8], line: &[u8]) {
        payload.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        payload.extend_from_slice(meta);
        payload.extend_from_slice(&(line.len() as u32).to_le_bytes());
        payload.extend_from_slice(line);
    }

    /// Iterates `(meta, line)` pairs of a payload.
    pub fn iter(payload: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut rest = payload;
        std::iter::from_fn(move || {
            let meta = take(&mut rest)?;
            let line = take(&mut rest)?;
            Some((meta, line))
        })
    }

    fn take<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
        if rest.len() < 4 {
            return None;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().ok()?) as usize;
        if rest.len() < 4 + len {
            return None;
        }
        let (item, tail) = rest[4..].split_at(len);
        *rest = tail;
        Some(item)
    }
}
