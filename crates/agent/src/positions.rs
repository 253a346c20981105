//! The positions file, in Promtail's format:
//!
//! ```yaml
//! positions:
//!   /var/log/app.log: "1234"
//! ```
//!
//! Lucia also records each file's device and inode under `lucia_files`
//! (Promtail ignores unknown keys), so that a file rotated while the agent
//! was stopped is found again and read to its end, and a fingerprint of
//! the line that ends at the position (`dev:inode:fingerprint`), so that a
//! file copied and truncated while the agent was stopped is noticed even
//! when it has grown past the position again, and its copy is found.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Deserialize;

/// A file's identity: device and inode.
pub type FileId = (u64, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub file: Option<FileId>,
    /// [`fingerprint`] of the line that ends at `offset`.
    pub fingerprint: Option<u64>,
}

/// Bytes of a line's end that its fingerprint covers.
const FINGERPRINT_BYTES: usize = 64;

/// The fingerprint of a line as read (without its newline; `terminated`
/// when one followed): FNV-1a of its last 64 bytes with the newline (enough to tell files
/// apart, cheap on every line read).
pub fn fingerprint(line: &[u8], terminated: bool) -> u64 {
    let newline: &[u8] = if terminated { b"\n" } else { b"" };
    let total = line.len() + newline.len();
    let skip = total.saturating_sub(FINGERPRINT_BYTES);
    line.iter()
        .chain(newline)
        .skip(skip)
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// The fingerprint of the line ending at `offset` in `path`, read back
/// from the file (`None` if it is shorter or unreadable).
pub fn fingerprint_at(path: &Path, offset: u64) -> Option<u64> {
    use std::io::{Read, Seek};
    let window = offset.min(FINGERPRINT_BYTES as u64 + 1);
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(std::io::SeekFrom::Start(offset - window)).ok()?;
    let mut bytes = vec![0; window as usize];
    file.read_exact(&mut bytes).ok()?;
    let (body, terminated) = match bytes.split_last() {
        Some((b'\n', body)) => (body, true),
        _ => (bytes.as_slice(), false),
    };
    // The line starts after the previous newline in the window, if any.
    let line = match memchr::memrchr(b'\n', body) {
        Some(i) => &body[i + 1..],
        None => body,
    };
    Some(fingerprint(line, terminated))
}

#[derive(Debug, thiserror::Error)]
pub enum PositionsError {
    #[error("cannot read positions file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid positions file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot write positions file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileFormat {
    positions: BTreeMap<String, String>,
    lucia_files: BTreeMap<String, String>,
}

#[derive(Default)]
struct State {
    positions: BTreeMap<String, Position>,
    dirty: bool,
}

/// Shared, acknowledged read positions.
#[derive(Clone)]
pub struct Positions {
    path: PathBuf,
    state: Arc<Mutex<State>>,
}

impl Positions {
    /// Reads `path` (a missing file is empty). With `ignore_invalid`, an
    /// unreadable file is logged and treated as empty, as in Promtail.
    pub fn load(path: &Path, ignore_invalid: bool) -> Result<Self, PositionsError> {
        let positions = match std::fs::read_to_string(path) {
            Ok(text) => match parse(&text) {
                Ok(p) => p,
                Err(message) if ignore_invalid => {
                    tracing::warn!(path = %path.display(), %message, "ignoring invalid positions file");
                    BTreeMap::new()
                }
                Err(message) => {
                    return Err(PositionsError::Parse {
                        path: path.to_path_buf(),
                        message,
                    });
                }
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(PositionsError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            state: Arc::new(Mutex::new(State {
                positions,
                dirty: false,
            })),
        })
    }

    pub fn get(&self, path: &str) -> Option<Position> {
        self.state.lock().positions.get(path).copied()
    }

    pub fn set(&self, path: &str, position: Position) {
        let mut state = self.state.lock();
        if state.positions.get(path) != Some(&position) {
            state.positions.insert(path.to_string(), position);
            state.dirty = true;
        }
    }

    pub fn remove(&self, path: &str) {
        let mut state = self.state.lock();
        if state.positions.remove(path).is_some() {
            state.dirty = true;
        }
    }

    /// Writes the file if anything changed since the last save: to a
    /// temporary file in the same directory, then renamed over it.
    pub fn save(&self) -> Result<(), PositionsError> {
        let text = {
            let mut state = self.state.lock();
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            render(&state.positions)
        };
        let write_err = |source| PositionsError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(err) = result {
            self.state.lock().dirty = true;
            return Err(write_err(err));
        }
        Ok(())
    }
}

fn parse(text: &str) -> Result<BTreeMap<String, Position>, String> {
    let file: FileFormat = if text.trim().is_empty() {
        FileFormat::default()
    } else {
        serde_saphyr_parse(text)?
    };
    let mut out = BTreeMap::new();
    for (path, offset) in file.positions {
        let offset: u64 = offset
            .trim()
            .parse()
            .map_err(|_| format!("offset {offset:?} of {path:?} is not a number"))?;
        let mut parts = file.lucia_files.get(&path).map(|v| v.split(':'));
        let mut next = || parts.as_mut().and_then(Iterator::next);
        let (dev, ino, fp) = (next(), next(), next());
        let id = dev
            .and_then(|d| d.parse().ok())
            .zip(ino.and_then(|i| i.parse().ok()));
        let fingerprint = fp.and_then(|f| u64::from_str_radix(f, 16).ok());
        out.insert(
            path,
            Position {
                offset,
                file: id,
                fingerprint,
            },
        );
    }
    Ok(out)
}

fn serde_saphyr_parse(text: &str) -> Result<FileFormat, String> {
    lucia_common::config::parse(Path::new("positions"), text).map_err(|e| e.to_string())
}

fn render(positions: &BTreeMap<String, Position>) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"));
    let mut out = String::from("positions:\n");
    for (path, p) in positions {
        out.push_str(&format!("  {}: \"{}\"\n", quote(path), p.offset));
    }
    if positions.values().any(|p| p.file.is_some()) {
        out.push_str("lucia_files:\n");
        for (path, p) in positions {
            if let Some((dev, ino)) = p.file {
                let fp = p.fingerprint.map(|f| format!(":{f:x}")).unwrap_or_default();
                out.push_str(&format!("  {}: \"{dev}:{ino}{fp}\"\n", quote(path)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_back_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        let long = "y".repeat(600);
        std::fs::write(&path, format!("first\nsecond\n{long}\npartial")).unwrap();
        assert_eq!(fingerprint_at(&path, 6), Some(fingerprint(b"first", true)));
        assert_eq!(
            fingerprint_at(&path, 13),
            Some(fingerprint(b"second", true))
        );
        assert_ne!(fingerprint(b"first", true), fingerprint(b"second", true));
        let end = 13 + 601;
        assert_eq!(
            fingerprint_at(&path, end),
            Some(fingerprint(long.as_bytes(), true))
        );
        assert_eq!(
            fingerprint_at(&path, end + 7),
            Some(fingerprint(b"partial", false))
        );
        assert_eq!(fingerprint_at(&path, end + 8), None);
    }

    #[test]
    fn round_trip_and_promtail_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("positions.yaml");
        let p = Positions::load(&path, false).unwrap();
        p.set(
            "/var/log/a b.log",
            Position {
                offset: 42,
                file: Some((1, 2)),
                fingerprint: Some(0xabc),
            },
        );
        p.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("positions:\n  \"/var/log/a b.log\": \"42\"\n"),
            "{text}"
        );
        let again = Positions::load(&path, false).unwrap();
        assert_eq!(
            again.get("/var/log/a b.log"),
            Some(Position {
                offset: 42,
                file: Some((1, 2)),
                fingerprint: Some(0xabc),
            })
        );
        // A file written by Promtail itself.
        std::fs::write(&path, "positions:\n  /var/log/x.log: \"7\"\n").unwrap();
        let promtail = Positions::load(&path, false).unwrap();
        assert_eq!(promtail.get("/var/log/x.log").map(|p| p.offset), Some(7));
        // Written before fingerprints were recorded.
        std::fs::write(
            &path,
            "positions:\n  /x: \"7\"\nlucia_files:\n  /x: \"3:4\"\n",
        )
        .unwrap();
        let old = Positions::load(&path, false).unwrap().get("/x").unwrap();
        assert_eq!((old.file, old.fingerprint), (Some((3, 4)), None));
        std::fs::write(&path, "positions: [").unwrap();
        assert!(Positions::load(&path, false).is_err());
        assert!(Positions::load(&path, true).unwrap().get("x").is_none());
    }
}
