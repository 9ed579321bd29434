//! Where a running query's result lines wait: a scratch file, not memory.

/// The lines of a query's results, in a scratch file removed when dropped.
#[derive(Debug)]
pub struct Spill {
    file: std::fs::File,
    path: std::path::PathBuf,
    len: u64,
}

impl Spill {
    pub(super) fn create(dir: &std::path::Path) -> std::io::Result<Spill> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        std::fs::create_dir_all(dir)?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("query-{}-{n}.spill", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        Ok(Spill { file, path, len: 0 })
    }

    pub(super) fn push(&mut self, line: &str) -> std::io::Result<(u64, u32)> {
        use std::io::Write as _;
        let at = self.len;
        (&self.file).write_all(line.as_bytes())?;
        self.len += line.len() as u64;
        Ok((at, u32::try_from(line.len()).unwrap_or(u32::MAX)))
    }

    pub(super) fn read(&self, at: u64, len: u32) -> std::io::Result<String> {
        use std::os::unix::fs::FileExt as _;
        let mut buf = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buf, at)?;
        String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
