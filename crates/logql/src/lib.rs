//! LogQL: lexer, parser, syntax tree, pretty-printer, and the log pipeline
//! stages that run a query's pipeline over lines.

pub mod ast;
pub mod pipeline;
pub mod template;
