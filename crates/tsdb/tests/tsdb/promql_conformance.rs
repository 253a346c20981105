//! Runs every promqltest file of the shared conformance corpus.

use std::path::Path;

use lucia_tsdb::promql::conformance;

const CORPUS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/conformance/promql"
);

/// Cases passing so far over the whole corpus; raise it as the engine
/// improves, never lower it.
const PASSING_AT_LEAST: usize = 1744;

#[test]
fn promql_corpus() {
    let dir = Path::new(CORPUS);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {CORPUS}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .test files in {CORPUS}");
    let (mut passed, mut failed) = (0, 0);
    for path in &files {
        let report = conformance::run_file(path).unwrap_or_else(|e| panic!("{e}"));
        if std::env::var_os("PROMQL_FAILURES").is_some() {
            for f in &report.failures {
                println!("FAIL {f}");
            }
        }
        println!(
            "{}: {} passed, {} failed",
            report.name, report.passed, report.failed
        );
        passed += report.passed;
        failed += report.failed;
    }
    println!("{passed} passed, {failed} failed");
    assert!(
        passed >= PASSING_AT_LEAST,
        "{passed} cases pass, fewer than the {PASSING_AT_LEAST} reached before"
    );
}
