//! The parser never panics, whatever the input.

use proptest::prelude::*;

use lucia_logql::{format_query, parse};

use crate::round_trip::VALID;

fn check(input: &str) {
    if let Ok(expr) = parse(input) {
        // Whatever parses prints to something that parses to the same tree.
        let printed = format_query(&expr);
        let again = parse(&printed).unwrap_or_else(|e| panic!("{input:?} -> {printed:?}: {e}"));
        assert_eq!(again, expr, "{input:?} -> {printed:?}");
    }
}

/// Fragments that make mutated queries more interesting than random bytes.
const FRAGMENTS: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[5m]",
    "[",
    "]",
    "|",
    "|=",
    "!=",
    "|~",
    "!~",
    "|>",
    "!>",
    "=",
    "==",
    ">",
    "<=",
    "\"",
    "`",
    ",",
    " or ",
    " and ",
    " by ",
    "without",
    "unwrap",
    "json",
    "logfmt",
    "--strict",
    "offset",
    "1h",
    "5",
    "-",
    "+",
    "^",
    "1.5MiB",
    "250ms",
    "ip(",
    "sum",
    "rate(",
    "topk(",
    "bool",
    "on(",
    "group_left",
    "#",
    "\n",
    "\\",
    "é",
    "\u{0}",
    "label_replace(",
    "vector(",
    "'",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings(input in ".{0,200}") {
        check(&input);
    }

    #[test]
    fn mutated_valid_queries(
        index in 0..VALID.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0..3u8, 0..FRAGMENTS.len()), 1..5),
    ) {
        let mut query: Vec<char> = VALID[index].chars().collect();
        for (at, kind, fragment) in edits {
            let pos = at.index(query.len() + 1);
            match kind {
                0 if pos < query.len() => {
                    query.remove(pos);
                }
                1 => {
                    for (i, c) in FRAGMENTS[fragment].chars().enumerate() {
                        query.insert(pos + i, c);
                    }
                }
                _ => query.truncate(pos),
            }
        }
        let query: String = query.into_iter().collect();
        check(&query);
    }
}
