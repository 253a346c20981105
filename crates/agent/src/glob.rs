//! Path globs as Promtail's `__path__` takes them: `*`, `?`, `[...]`,
//! `{a,b}` and `**` (any number of directories).

use std::path::{Path, PathBuf};

use regex::Regex;

#[derive(Debug, Clone)]
pub struct Glob {
    /// The directory without glob characters to walk from.
    base: PathBuf,
    regex: Regex,
    recursive: bool,
    depth: usize,
}

impl Glob {
    pub fn new(pattern: &str) -> Result<Self, regex::Error> {
        let components: Vec<&str> = pattern.split('/').collect();
        let literal = components
            .iter()
            .take_while(|c| !c.contains(['*', '?', '[', '{']))
            .count();
        let base = if literal == components.len() {
            // No glob characters: the pattern is one file.
            components[..literal.saturating_sub(1)].join("/")
        } else {
            components[..literal].join("/")
        };
        let base = if base.is_empty() && pattern.starts_with('/') {
            "/".to_string()
        } else if base.is_empty() {
            ".".to_string()
        } else {
            base
        };
        let recursive = pattern.contains("**");
        let depth = components.len() - literal.min(components.len().saturating_sub(1));
        let mut re = String::from("^");
        let chars: Vec<char> = pattern.chars().collect();
        let mut i = 0;
        let mut in_braces = false;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    // `**/` matches zero or more directories.
                    if chars.get(i + 2) == Some(&'/') {
                        re.push_str("(?:[^/]*/)*");
                        i += 3;
                    } else {
                        re.push_str(".*");
                        i += 2;
                    }
                    continue;
                }
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                '[' => {
                    let end = chars[i..].iter().position(|&c| c == ']').map(|p| p + i);
                    match end {
                        Some(end) if end > i + 1 => {
                            re.push('[');
                            let mut body: String = chars[i + 1..end].iter().collect();
                            if let Some(rest) = body.strip_prefix('!') {
                                body = format!("^{rest}");
                            }
                            re.push_str(&body.replace('\\', "\\\\"));
                            re.push(']');
                            i = end + 1;
                            continue;
                        }
                        _ => re.push_str("\\["),
                    }
                }
                '{' => {
                    in_braces = true;
                    re.push_str("(?:");
                }
                '}' if in_braces => {
                    in_braces = false;
                    re.push(')');
                }
                ',' if in_braces => re.push('|'),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
            i += 1;
        }
        re.push('$');
        Ok(Self {
            base: PathBuf::from(base),
            regex: Regex::new(&re)?,
            recursive,
            depth,
        })
    }

    pub fn is_match(&self, path: &str) -> bool {
        self.regex.is_match(path)
    }

    /// The regular files that match, sorted.
    pub fn walk(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let max_depth = if self.recursive { 64 } else { self.depth };
        self.walk_dir(&self.base, 0, max_depth, &mut out);
        out.sort();
        out
    }

    fn walk_dir(&self, dir: &Path, depth: usize, max_depth: usize, out: &mut Vec<PathBuf>) {
        if depth >= max_depth {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                self.walk_dir(&path, depth + 1, max_depth, out);
            } else if let Some(s) = path.to_str() {
                let s = s.strip_prefix("./").unwrap_or(s);
                // Regular files, and symlinks to them.
                let is_file = file_type.is_file()
                    || (file_type.is_symlink()
                        && std::fs::metadata(&path).is_ok_and(|m| m.is_file()));
                if is_file && self.is_match(s) {
                    out.push(PathBuf::from(s));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_doublestar() {
        let g = Glob::new("/var/log/**/*.log").unwrap();
        assert!(g.is_match("/var/log/a.log"));
        assert!(g.is_match("/var/log/x/y/a.log"));
        assert!(!g.is_match("/var/log/a.txt"));
        let g = Glob::new("/var/log/*.{log,txt}").unwrap();
        assert!(g.is_match("/var/log/a.txt"));
        assert!(!g.is_match("/var/log/sub/a.txt"));
        let g = Glob::new("/var/log/app[0-9].log").unwrap();
        assert!(g.is_match("/var/log/app3.log"));
        assert!(!g.is_match("/var/log/appx.log"));
    }

    #[test]
    fn walks_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        for f in ["x.log", "a/y.log", "a/b/z.log", "a/b/z.txt"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        let found = Glob::new(&format!("{root}/**/*.log")).unwrap().walk();
        assert_eq!(found.len(), 3, "{found:?}");
        let found = Glob::new(&format!("{root}/*.log")).unwrap().walk();
        assert_eq!(found, vec![dir.path().join("x.log")]);
        let found = Glob::new(&format!("{root}/a/y.log")).unwrap().walk();
        assert_eq!(found, vec![dir.path().join("a/y.log")]);
    }
}
