//! `lucia rules test` and `lucia rules check`: promtool's rule commands,
//! with the tsdb crate's PromQL engine over in-memory series.

use std::path::PathBuf;
use std::sync::Arc;

use lucia_ruler::group::{Appender, QueryEngine};
use lucia_ruler::{Labels, QueryValue, Sample};
use lucia_tsdb::promql::{Engine, MemorySource, Value};

/// The PromQL engine over one in-memory storage.
struct MemoryEngine {
    engine: Engine,
    source: MemorySource,
}

impl QueryEngine for MemoryEngine {
    fn instant(&self, expr: &str, t_ms: i64) -> Result<QueryValue, String> {
        let value = self
            .engine
            .instant_query(&self.source, expr, t_ms)
            .map_err(|e| e.to_string())?;
        Ok(match value {
            Value::Scalar(f) => QueryValue::Scalar(f),
            Value::String(s) => QueryValue::String(s),
            Value::Vector(v) => QueryValue::Vector(
                v.into_iter()
                    .map(|s| Sample {
                        labels: s.labels,
                        value: s.f,
                    })
                    .collect(),
            ),
            Value::Matrix(m) => {
                QueryValue::Matrix(m.into_iter().map(|s| (s.labels, s.points)).collect())
            }
        })
    }
}

impl Appender for MemoryEngine {
    fn append(&self, samples: &[(Labels, i64, f64)]) -> Result<(), String> {
        for (labels, t, v) in samples {
            self.source.append(labels, *t, *v);
        }
        Ok(())
    }
}

fn new_engine() -> Arc<dyn lucia_ruler::unittest::TestEngine> {
    Arc::new(MemoryEngine {
        engine: Engine::default(),
        source: MemorySource::new(),
    })
}

/// `lucia rules test FILE…`: like `promtool test rules`.
pub fn test(files: &[PathBuf]) -> std::process::ExitCode {
    let mut ok = true;
    for path in files {
        let (out, passed) = lucia_ruler::unittest::run_file(path, &new_engine);
        // As promtool: the file name on stdout, failures on stderr.
        let (head, rest) = out.split_once('\n').unwrap_or((&out, ""));
        println!("{head}");
        if passed {
            print!("{rest}");
        } else {
            eprint!("{rest}");
        }
        ok &= passed;
    }
    exit(ok)
}

/// `lucia rules check FILE…`: like `promtool check rules`.
pub fn check(files: &[PathBuf]) -> std::process::ExitCode {
    let mut ok = true;
    for path in files {
        let (out, passed) = lucia_ruler::unittest::check_file(path);
        if passed {
            print!("{out}");
        } else {
            eprint!("{out}");
        }
        ok &= passed;
    }
    exit(ok)
}

fn exit(ok: bool) -> std::process::ExitCode {
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
