//! Patterns: `<name>` and `<_>` captures with literal text between them,
//! used by the `pattern` parser and the `|>`/`!>` line filters.

use memchr::memmem;

use super::PipelineError;

#[derive(Debug, Clone)]
enum Node {
    Literal(String),
    /// `None` for `<_>`.
    Capture(Option<String>),
}

#[derive(Debug, Clone)]
pub struct Pattern {
    nodes: Vec<Node>,
}

fn parse_nodes(src: &str) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut literal = String::new();
    let mut rest = src;
    while let Some(lt) = rest.find('<') {
        let after = &rest[lt + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        let valid = after[name_len..].starts_with('>')
            && !name.is_empty()
            && !name.as_bytes()[0].is_ascii_digit();
        if valid {
            literal.push_str(&rest[..lt]);
            if !literal.is_empty() {
                nodes.push(Node::Literal(std::mem::take(&mut literal)));
            }
            nodes.push(Node::Capture((name != "_").then(|| name.to_string())));
            rest = &after[name_len + 1..];
        } else {
            literal.push_str(&rest[..lt + 1]);
            rest = after;
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        nodes.push(Node::Literal(literal));
    }
    nodes
}

fn check_consecutive(nodes: &[Node]) -> Result<(), PipelineError> {
    for pair in nodes.windows(2) {
        if matches!(pair, [Node::Capture(_), Node::Capture(_)]) {
            return Err(PipelineError::Pattern(
                "found consecutive capture: put literal text between two captures".into(),
            ));
        }
    }
    Ok(())
}

impl Pattern {
    /// A pattern for the `pattern` parser: at least one named capture, no
    /// two captures in a row, no duplicate names.
    pub fn parser(src: &str) -> Result<Self, PipelineError> {
        let nodes = parse_nodes(src);
        check_consecutive(&nodes)?;
        let mut names: Vec<&str> = Vec::new();
        for n in &nodes {
            if let Node::Capture(Some(name)) = n {
                if names.contains(&name.as_str()) {
                    return Err(PipelineError::Pattern(format!(
                        "duplicate capture name ({name})"
                    )));
                }
                names.push(name);
            }
        }
        if names.is_empty() {
            return Err(PipelineError::Pattern(
                "at least one capture is required".into(),
            ));
        }
        Ok(Self { nodes })
    }

    /// A pattern for a line filter: only `<_>` captures.
    pub fn filter(src: &str) -> Result<Self, PipelineError> {
        let nodes = parse_nodes(src);
        check_consecutive(&nodes)?;
        if nodes.iter().any(|n| matches!(n, Node::Capture(Some(_)))) {
            return Err(PipelineError::Pattern(
                "named captures are not allowed: use <_> in a pattern line filter".into(),
            ));
        }
        Ok(Self { nodes })
    }

    /// Calls `f(name, value)` for each named capture found in `line`; a
    /// short line fills only the leading captures.
    pub fn captures<'l>(&self, line: &'l str, mut f: impl FnMut(&str, &'l str)) {
        if line.is_empty() || self.nodes.is_empty() {
            return;
        }
        let mut rest = line;
        let mut nodes = self.nodes.as_slice();
        if let Some(Node::Literal(lit)) = nodes.first() {
            if !rest.starts_with(lit.as_str()) {
                return;
            }
            rest = &rest[lit.len()..];
            nodes = &nodes[1..];
        }
        while let Some(Node::Capture(name)) = nodes.first() {
            match nodes.get(1) {
                Some(Node::Literal(lit)) => match memmem::find(rest.as_bytes(), lit.as_bytes()) {
                    Some(i) => {
                        if let Some(name) = name {
                            f(name, &rest[..i]);
                        }
                        rest = &rest[i + lit.len()..];
                        nodes = &nodes[2..];
                    }
                    None => {
                        if let Some(name) = name {
                            f(name, rest);
                        }
                        return;
                    }
                },
                _ => {
                    if let Some(name) = name {
                        f(name, rest);
                    }
                    return;
                }
            }
        }
    }

    /// Whether the whole line matches (a filter pattern).
    pub fn test(&self, line: &str) -> bool {
        if line.is_empty() || self.nodes.is_empty() {
            return line.is_empty() && self.nodes.is_empty();
        }
        let bytes = line.as_bytes();
        let mut off = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            let Node::Literal(lit) = node else { continue };
            let Some(j) = memmem::find(&bytes[off..], lit.as_bytes()) else {
                return false;
            };
            if i == 0 && j != 0 {
                return false;
            }
            if i != 0 && j == 0 {
                return false;
            }
            off += j + lit.len();
        }
        let ends_with_capture = matches!(self.nodes.last(), Some(Node::Capture(_)));
        ends_with_capture == (off != bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(p: &str, line: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        Pattern::parser(p)
            .unwrap()
            .captures(line, |n, v| out.push((n.to_string(), v.to_string())));
        out
    }

    #[test]
    fn parser_captures() {
        assert_eq!(
            caps("<method> <path> <status>", "GET /home 200"),
            vec![
                ("method".into(), "GET".into()),
                ("path".into(), "/home".into()),
                ("status".into(), "200".into())
            ]
        );
        assert_eq!(
            caps("<method> <_> <status>", "GET /home 200"),
            vec![
                ("method".into(), "GET".into()),
                ("status".into(), "200".into())
            ]
        );
        assert_eq!(
            caps("<method> <path>", "POST"),
            vec![("method".into(), "POST".into())]
        );
        assert_eq!(caps("[<ts>] <msg>", "x [1] a"), vec![]);
        assert!(Pattern::parser("no captures here").is_err());
        assert!(Pattern::parser("<a><b>").is_err());
        assert!(Pattern::parser("<a> <a>").is_err());
        assert_eq!(caps("<a> <1b>", "x <1b>"), vec![("a".into(), "x".into())]);
    }

    #[test]
    fn filter_test() {
        let p = Pattern::filter("GET <_> 200").unwrap();
        assert!(p.test("GET /api 200"));
        assert!(!p.test("POST /api 500"));
        assert!(!Pattern::filter("GET /api").unwrap().test("GET /api 200"));
        assert!(Pattern::filter("GET /api").unwrap().test("GET /api"));
        assert!(
            Pattern::filter("level=error <_>")
                .unwrap()
                .test("level=error x")
        );
        assert!(Pattern::filter("<verb> /api").is_err());
    }
}
