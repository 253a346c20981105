//! LogQL: lexer, parser, syntax tree, pretty-printer, and the log pipeline
//! stages that run a query's pipeline over lines.

pub mod ast;
pub mod format;
mod lexer;
pub mod parser;
pub mod pipeline;
pub mod template;

pub use format::format_query;
pub use parser::{ParseError, parse, parse_log_expr, parse_metric_expr};
