//! A Go `text/template` engine for `line_format` and `label_format`: text,
//! actions with `{{-`/`-}}` trimming, comments, fields (`.name`, `.`),
//! literals, pipelines, parenthesized calls, `if`/`else if`/`else`/`end`,
//! and Loki's function set (Go builtins, Loki's own, the sprig subset).

mod funcs;
mod parse;

use std::fmt;

pub use funcs::{format_go_float, parse_go_layout};
use parse::{Node, Operand, Pipe};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("template: {0}")]
    Parse(String),
    #[error("template: {0}")]
    Exec(String),
}

/// What a template reads: label values, the line and its timestamp.
pub trait TemplateData {
    /// A label's value (`.name`).
    fn get(&self, name: &str) -> Option<&str>;
    /// `__line__`.
    fn line(&self) -> &str;
    /// `__timestamp__`, nanoseconds since the epoch.
    fn timestamp_nanos(&self) -> i64;
}

/// A template value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A time, nanoseconds since the epoch, with a UTC offset in seconds.
    Time(i64, i32),
    List(Vec<Value>),
    Map(Vec<(String, Value)>),
    /// `.`: the label map.
    Dot,
}

impl Value {
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Time(..) | Value::Dot => true,
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("<no value>"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&format_go_float(*x)),
            Value::Str(s) => f.write_str(s),
            Value::Time(ns, off) => f.write_str(&funcs::format_time_default(*ns, *off)),
            Value::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("map[")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{k}:{v}")?;
                }
                f.write_str("]")
            }
            Value::Dot => f.write_str("map[]"),
        }
    }
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
    /// A template without actions: its text.
    constant: Option<String>,
}

impl Template {
    /// Parses a template; unknown functions and syntax errors fail here.
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        let nodes = parse::parse(src)?;
        let constant = match nodes.as_slice() {
            [] => Some(String::new()),
            [Node::Text(t)] => Some(t.clone()),
            _ => None,
        };
        Ok(Self { nodes, constant })
    }

    /// Renders into `out` (appending).
    pub fn execute(&self, data: &dyn TemplateData, out: &mut String) -> Result<(), TemplateError> {
        if let Some(c) = &self.constant {
            out.push_str(c);
            return Ok(());
        }
        exec_nodes(&self.nodes, data, out)
    }
}

fn exec_nodes(
    nodes: &[Node],
    data: &dyn TemplateData,
    out: &mut String,
) -> Result<(), TemplateError> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipe(p, data)?;
                write_value(out, &v);
            }
            Node::If {
                branches,
                otherwise,
            } => {
                let mut done = false;
                for (cond, body) in branches {
                    if eval_pipe(cond, data)?.truthy() {
                        exec_nodes(body, data, out)?;
                        done = true;
                        break;
                    }
                }
                if !done {
                    exec_nodes(otherwise, data, out)?;
                }
            }
        }
    }
    Ok(())
}

fn write_value(out: &mut String, v: &Value) {
    use std::fmt::Write;
    match v {
        Value::Str(s) => out.push_str(s),
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

fn eval_pipe(p: &Pipe, data: &dyn TemplateData) -> Result<Value, TemplateError> {
    let mut prev: Option<Value> = None;
    for cmd in &p.cmds {
        prev = Some(eval_command(cmd, prev, data)?);
    }
    Ok(prev.unwrap_or(Value::Nil))
}

fn eval_operand(op: &Operand, data: &dyn TemplateData) -> Result<Value, TemplateError> {
    Ok(match op {
        Operand::Dot => Value::Dot,
        Operand::Field(path) => {
            let first = path.first().map(String::as_str).unwrap_or("");
            let root = Value::Str(data.get(first).unwrap_or("").to_string());
            walk_fields(root, &path[1..])?
        }
        Operand::Chain(op, path) => walk_fields(eval_operand(op, data)?, path)?,
        Operand::Str(s) => Value::Str(s.clone()),
        Operand::Int(i) => Value::Int(*i),
        Operand::Float(f) => Value::Float(*f),
        Operand::Bool(b) => Value::Bool(*b),
        Operand::Nil => Value::Nil,
        Operand::Pipe(p) => eval_pipe(p, data)?,
        Operand::Func(name) => funcs::call(name, Vec::new(), data)?,
    })
}

fn walk_fields(mut v: Value, path: &[String]) -> Result<Value, TemplateError> {
    for field in path {
        v = match v {
            Value::Map(m) => m
                .into_iter()
                .find(|(k, _)| k == field)
                .map(|(_, v)| v)
                .unwrap_or(Value::Nil),
            Value::Nil => Value::Nil,
            _ => {
                return Err(TemplateError::Exec(format!(
                    "can't evaluate field {field} in type string"
                )));
            }
        };
    }
    Ok(v)
}

fn eval_command(
    cmd: &[Operand],
    prev: Option<Value>,
    data: &dyn TemplateData,
) -> Result<Value, TemplateError> {
    match cmd.first() {
        Some(Operand::Func(name)) => {
            let mut args = Vec::with_capacity(cmd.len());
            for a in &cmd[1..] {
                args.push(eval_operand(a, data)?);
            }
            if let Some(p) = prev {
                args.push(p);
            }
            funcs::call(name, args, data)
        }
        Some(op) => {
            if cmd.len() > 1 || prev.is_some() {
                return Err(TemplateError::Exec(
                    "can't give argument to non-function".to_string(),
                ));
            }
            eval_operand(op, data)
        }
        None => Ok(Value::Nil),
    }
}

#[cfg(test)]
mod tests;
