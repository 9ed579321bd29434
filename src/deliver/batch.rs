//! A file being built: JSON Lines, compressed in chunks on a thread pool.
//!
//! Compression is the costliest step of delivery. The file is cut into chunks of
//! [`CHUNK`] uncompressed bytes, each compressed on its own (a gzip member or a zstd
//! frame) by rayon's pool while the pipeline goes on routing; the members are
//! concatenated in order, which is a valid `.gz` / `.zst` that `zcat`, Athena,
//! Trino and DuckDB read as one. At most [`IN_FLIGHT`] chunks wait for the pool, so
//! memory stays bounded when compression is the bottleneck.

use crate::api::Compression;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::mpsc;

/// Uncompressed bytes per independently compressed chunk.
pub const CHUNK: usize = 1024 * 1024;
/// Chunks handed to the pool and not yet collected.
const IN_FLIGHT: usize = 8;

enum Part {
    Done(Vec<u8>),
    Pending(mpsc::Receiver<std::io::Result<Vec<u8>>>),
}

/// The bytes of one future object (what is in it, and when to cut it, is
/// [`super::batcher`]'s business).
pub struct Batch {
    compression: Compression,
    chunk: Vec<u8>,
    parts: VecDeque<Part>,
    pending: usize,
    pub events: u64,
    /// Uncompressed bytes.
    pub raw_bytes: u64,
    /// Receive times of the traces, for the delivery latency metric (a sample at most
    /// per spool record).
    pub received_ms: Vec<i64>,
}

/// Compresses one chunk as a complete gzip member or zstd frame.
fn compress(compression: Compression, raw: &[u8]) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::Gzip => {
            let mut e =
                flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 6), flate2::Compression::new(6));
            e.write_all(raw)?;
            e.finish()
        }
        Compression::Zstd => zstd::bulk::compress(raw, 3),
        Compression::None => Ok(raw.to_vec()),
    }
}

impl Batch {
    pub fn new(compression: Compression) -> Batch {
        Batch {
            compression,
            chunk: Vec::new(),
            parts: VecDeque::new(),
            pending: 0,
            events: 0,
            raw_bytes: 0,
            received_ms: Vec::new(),
        }
    }

    /// Adds one trace: `line` is the spooled JSON object without its closing brace's
    /// tracker field; `suffix` is `,"tracker":"name"}\n`.
    pub fn push(&mut self, line: &[u8], suffix: &[u8]) -> std::io::Result<()> {
        let body = line.strip_suffix(b"}").unwrap_or(line);
        if self.chunk.capacity() == 0 {
            // Sized on first use (a file that stays empty costs nothing), once:
            // growing by doubling would copy every chunk several times.
            self.chunk.reserve(CHUNK + 64 * 1024);
        }
        self.chunk.extend_from_slice(body);
        self.chunk.extend_from_slice(suffix);
        self.events += 1;
        self.raw_bytes += (body.len() + suffix.len()) as u64;
        if self.chunk.len() >= CHUNK {
            self.seal()?;
        }
        Ok(())
    }

    /// Hands the current chunk to the pool (plain chunks are kept as they are).
    fn seal(&mut self) -> std::io::Result<()> {
        let raw = std::mem::take(&mut self.chunk);
        if self.compression == Compression::None {
            self.parts.push_back(Part::Done(raw));
            return Ok(());
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let compression = self.compression;
        rayon::spawn(move || {
            let _ = tx.send(compress(compression, &raw));
        });
        self.parts.push_back(Part::Pending(rx));
        self.pending += 1;
        if self.pending > IN_FLIGHT {
            self.collect_oldest()?;
        }
        Ok(())
    }

    /// Waits for the oldest pending chunk.
    fn collect_oldest(&mut self) -> std::io::Result<()> {
        for part in self.parts.iter_mut() {
            if let Part::Pending(rx) = part {
                let bytes = rx
                    .recv()
                    .map_err(|_| std::io::Error::other("compression task lost"))??;
                *part = Part::Done(bytes);
                self.pending -= 1;
                return Ok(());
            }
        }
        Ok(())
    }

    /// The finished file.
    pub fn finish(mut self) -> std::io::Result<Vec<u8>> {
        if !self.chunk.is_empty() || self.parts.is_empty() {
            self.seal()?;
        }
        let mut out = Vec::new();
        for part in self.parts {
            match part {
                Part::Done(b) => out.extend_from_slice(&b),
                Part::Pending(rx) => out.extend_from_slice(
                    &rx.recv()
                        .map_err(|_| std::io::Error::other("compression task lost"))??,
                ),
            }
        }
        Ok(out)
    }
}

/// `,"tracker":"<name>"}\n`, appended to each spooled line.
pub fn tracker_suffix(name: &str) -> Vec<u8> {
    let mut s = b",\"tracker\":".to_vec();
    s.extend_from_slice(serde_json::to_string(name).unwrap_or_default().as_bytes());
    s.extend_from_slice(b"}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn lines(compression: Compression) -> Vec<serde_json::Value> {
        let mut b = Batch::new(compression);
        let suffix = tracker_suffix("sys\"x");
        b.push(br#"{"trace_id":"a"}"#, &suffix).unwrap();
        b.push(br#"{"trace_id":"b","n":1}"#, &suffix).unwrap();
        assert_eq!(b.events, 2);
        let bytes = b.finish().unwrap();
        let mut text = String::new();
        match compression {
            Compression::Gzip => {
                flate2::read::MultiGzDecoder::new(&bytes[..])
                    .read_to_string(&mut text)
                    .unwrap();
            }
            Compression::Zstd => text = String::from_utf8(zstd::decode_all(&bytes[..]).unwrap()).unwrap(),
            Compression::None => text = String::from_utf8(bytes).unwrap(),
        }
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn large_files_are_concatenated_members_read_as_one() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let mut b = Batch::new(c);
            let suffix = tracker_suffix("t");
            let n = 3 * CHUNK / 40 + 17; // several chunks and a partial one
            for i in 0..n {
                b.push(format!(r#"{{"i":{i:08}}}"#).as_bytes(), &suffix).unwrap();
            }
            let bytes = b.finish().unwrap();
            let mut text = String::new();
            match c {
                Compression::Gzip => {
                    flate2::read::MultiGzDecoder::new(&bytes[..])
                        .read_to_string(&mut text)
                        .unwrap();
                }
                Compression::Zstd => text = String::from_utf8(zstd::decode_all(&bytes[..]).unwrap()).unwrap(),
                Compression::None => text = String::from_utf8(bytes).unwrap(),
            }
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), n, "{c:?}");
            assert!(
                lines
                    .iter()
                    .enumerate()
                    .all(|(i, l)| l.contains(&format!("{i:08}"))),
                "{c:?}: in order"
            );
        }
    }

    #[test]
    fn an_empty_batch_is_a_valid_empty_file() {
        let bytes = Batch::new(Compression::Gzip).finish().unwrap();
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.is_empty());
    }

    #[test]
    fn every_compression_yields_json_lines_with_the_tracker() {
        for c in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let l = lines(c);
            assert_eq!(l.len(), 2, "{c:?}");
            assert_eq!(l[0]["trace_id"], "a");
            assert_eq!(l[1]["n"], 1);
            assert_eq!(l[1]["tracker"], "sys\"x");
        }
    }
}
