//! Every query of the LogQL conformance corpus parses, except those the
//! corpus expects to fail (which may fail here or later).

use std::path::PathBuf;

use lucia_logql::{format_query, parse};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/logql")
}

/// The query of an `eval` line, without the evaluation header and any
/// trailing `# comment` outside quotes.
fn eval_query(line: &str) -> Option<String> {
    let rest = line.strip_prefix("eval ")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let skip = match *words.first()? {
        "instant" => 3, // instant at <t>
        "range" => 7,   // range from <a> to <b> step <s>
        _ => return None,
    };
    let mut query = rest.trim_start();
    for _ in 0..skip {
        let word_end = query.find(char::is_whitespace)?;
        query = query[word_end..].trim_start();
    }
    // Cut a trailing comment that is not inside a string.
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in query.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '`' => quote = Some(c),
            None if c == '#' => return Some(query[..i].trim().to_string()),
            None => {}
        }
    }
    Some(query.trim().to_string())
}

#[test]
fn corpus_queries_parse() {
    let dir = corpus_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!("conformance corpus not found at {}", dir.display());
        return;
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "logqltest"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no .logqltest files in {}",
        dir.display()
    );
    let (mut parsed, mut expected_failures, mut failures) = (0, 0, Vec::new());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(query) = eval_query(line) else {
                continue;
            };
            let expect_fail = lines
                .get(i + 1)
                .is_some_and(|next| next.trim_start().starts_with("expect fail"));
            match parse(&query) {
                Ok(expr) => {
                    parsed += 1;
                    let printed = format_query(&expr);
                    let again = parse(&printed).unwrap_or_else(|e| {
                        panic!("{query}\nformatted as\n{printed}\ndoes not parse: {e}")
                    });
                    assert_eq!(again, expr, "{query}\nformatted as\n{printed}");
                }
                Err(_) if expect_fail => expected_failures += 1,
                Err(err) => failures.push(format!(
                    "{}:{}: {query}\n    {err}",
                    file.file_name().unwrap_or_default().to_string_lossy(),
                    i + 1
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} corpus queries do not parse:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(parsed > 700, "only {parsed} queries parsed");
    eprintln!(
        "{parsed} corpus queries parse, {expected_failures} expected failures fail at parse time"
    );
}

#[test]
fn eval_lines_are_split() {
    assert_eq!(
        eval_query(r##"eval instant at 60s rate({a="#"}[1m])   # note"##).as_deref(),
        Some(r##"rate({a="#"}[1m])"##)
    );
    assert_eq!(
        eval_query("eval range from 0s to 1m step 20s vector(1)").as_deref(),
        Some("vector(1)")
    );
}
