//! Atomic snapshot files: written to a temporary file, fsynced, renamed
//! over the old one, and the folder fsynced.

use std::io::Write;
use std::path::Path;

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a snapshot; a missing file is `None`.
pub fn read(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Milliseconds since the epoch, for snapshot files.
pub fn to_millis(t: &crate::model::Time) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> crate::model::Time {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_else(crate::model::zero_time)
}
