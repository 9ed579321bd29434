//! A file being built: JSON Lines, compressed as they are added.

use crate::api::Compression;
use crate::spool::Position;
use flate2::write::GzEncoder;
use std::io::Write;

enum Encoder {
    Gzip(GzEncoder<Vec<u8>>),
    Zstd(zstd::Encoder<'static, Vec<u8>>),
    Plain(Vec<u8>),
}

/// Traces of one future object.
pub struct Batch {
    encoder: Encoder,
    /// Spool position the file starts at (names the object).
    pub start: Position,
    pub events: u64,
    /// Uncompressed bytes.
    pub raw_bytes: u64,
    /// When the batch was opened (Unix ms, wall clock): the age limit counts from
    /// it, so a backlog replayed after an outage still fills whole files.
    pub opened_ms: i64,
    /// Trace time of the first trace (Unix ms): names the object.
    pub first_time_ms: i64,
    /// Receive times of the traces, for the delivery latency metric (a sample at most
    /// per spool record).
    pub received_ms: Vec<i64>,
}

impl Batch {
    pub fn new(compression: Compression, start: Position, opened_ms: i64, first_time_ms: i64) -> Batch {
        let encoder = match compression {
            Compression::Gzip => Encoder::Gzip(GzEncoder::new(Vec::new(), flate2::Compression::new(6))),
            Compression::Zstd => match zstd::Encoder::new(Vec::new(), 3) {
                Ok(e) => Encoder::Zstd(e),
                Err(_) => Encoder::Plain(Vec::new()),
            },
            Compression::None => Encoder::Plain(Vec::new()),
        };
        Batch {
            encoder,
            start,
            events: 0,
            raw_bytes: 0,
            opened_ms,
            first_time_ms,
            received_ms: Vec::new(),
        }
    }

    /// Adds one trace: `line` is the spooled JSON object without its closing brace's
    /// tracker field; `suffix` is `,"tracker":"name"}\n`.
    pub fn push(&mut self, line: &[u8], suffix: &[u8]) -> std::io::Result<()> {
        let body = line.strip_suffix(b"}").unwrap_or(line);
        self.write(body)?;
        self.write(suffix)?;
        self.events += 1;
        self.raw_bytes += (body.len() + suffix.len()) as u64;
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.encoder {
            Encoder::Gzip(e) => e.write_all(bytes),
            Encoder::Zstd(e) => e.write_all(bytes),
            Encoder::Plain(v) => {
                v.extend_from_slice(bytes);
                Ok(())
            }
        }
    }

    /// The finished file.
    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        match self.encoder {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
            Encoder::Plain(v) => Ok(v),
        }
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
        let mut b = Batch::new(compression, Position::default(), 0, 0);
        let suffix = tracker_suffix("sys\"x");
        b.push(br#"{"trace_id":"a"}"#, &suffix).unwrap();
        b.push(br#"{"trace_id":"b","n":1}"#, &suffix).unwrap();
        assert_eq!(b.events, 2);
        let bytes = b.finish().unwrap();
        let mut text = String::new();
        match compression {
            Compression::Gzip => {
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_string(&mut text)
                    .unwrap();
            }
            Compression::Zstd => text = String::from_utf8(zstd::decode_all(&bytes[..]).unwrap()).unwrap(),
            Compression::None => text = String::from_utf8(bytes).unwrap(),
        }
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
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
