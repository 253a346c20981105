//! Label-name sanitizing shared by the parsers.

/// Appends `key` sanitized: trimmed, characters outside `[a-zA-Z0-9_]`
/// become `_`, and a leading digit (at the start of `out`) gets a `_` prefix.
pub fn append_sanitized(out: &mut String, key: &str) {
    let key = key.trim();
    if key.is_empty() {
        return;
    }
    if out.is_empty() && key.as_bytes()[0].is_ascii_digit() {
        out.push('_');
    }
    for c in key.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            out.push(c);
        } else {
            out.push('_');
        }
    }
}

/// `key` sanitized into `out` (cleared first).
pub fn sanitize_key(key: &str, out: &mut String) {
    out.clear();
    append_sanitized(out, key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes() {
        let mut s = String::new();
        sanitize_key("a-b", &mut s);
        assert_eq!(s, "a_b");
        sanitize_key("9x", &mut s);
        assert_eq!(s, "_9x");
        sanitize_key(" é.z ", &mut s);
        assert_eq!(s, "__z");
        sanitize_key("  ", &mut s);
        assert_eq!(s, "");
    }
}
