//! A general Go `text/template` engine: nested data (structs, maps, lists,
//! times, durations), `if`/`else if`/`with`/`range` (with `$i, $e :=`,
//! `else`, `break`, `continue`), variables, `define`/`template`/`block`,
//! pipelines, parenthesized pipelines with field chains, method-like
//! fields on values (`.SortedPairs`, `.Names`, `.Values`, `.Remove`,
//! `.Firing`, `.Resolved`, `.Format`, `.Unix`), Go's builtin functions and
//! a registry that roles extend with their own (Alertmanager's, and later
//! Prometheus' for the ruler).

mod funcs;
mod parse;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset};

pub use funcs::{
    format_go_duration, format_go_float, format_go_layout, humanize_duration, sprintf,
};
use parse::{Node, Operand, Pipe};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("template: {0}")]
    Parse(String),
    #[error("template: {0}")]
    Exec(String),
}

fn exec_err(msg: impl Into<String>) -> TemplateError {
    TemplateError::Exec(msg.into())
}

/// A template value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    /// A string-keyed map: a missing key reads as the empty string (like
    /// Go's `map[string]string`).
    Map(BTreeMap<String, Value>),
    /// A struct: a missing field is an error.
    Struct(BTreeMap<String, Value>),
    Time(DateTime<FixedOffset>),
    /// A duration in nanoseconds (Go's `time.Duration`).
    Duration(i64),
}

impl Value {
    pub fn str(s: impl Into<String>) -> Self {
        Value::Str(s.into())
    }

    /// A map of strings.
    pub fn string_map<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        Value::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.clone(), Value::Str(v.clone())))
                .collect(),
        )
    }

    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Struct(_) | Value::Time(_) => true,
            Value::Duration(d) => *d != 0,
        }
    }

    /// The text of a string value (and the printed form of others).
    pub fn as_string(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// Converts JSON (objects become maps).
    pub fn from_json(v: &serde_json::Value) -> Self {
        match v {
            serde_json::Value::Null => Value::Nil,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            serde_json::Value::String(s) => Value::Str(s.clone()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v)))
                    .collect(),
            ),
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
            Value::Map(m) | Value::Struct(m) => {
                f.write_str(if matches!(self, Value::Map(_)) {
                    "map["
                } else {
                    "{"
                })?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    if matches!(self, Value::Map(_)) {
                        write!(f, "{k}:{v}")?;
                    } else {
                        write!(f, "{v}")?;
                    }
                }
                f.write_str(if matches!(self, Value::Map(_)) {
                    "]"
                } else {
                    "}"
                })
            }
            Value::Time(t) => f.write_str(&format_go_layout(
                "2006-01-02 15:04:05.999999999 -0700 MST",
                t,
            )),
            Value::Duration(d) => f.write_str(&format_go_duration(*d)),
        }
    }
}

/// A template function: arguments in, a value or an error message out.
pub type Function = Arc<dyn Fn(&[Value]) -> Result<Value, String> + Send + Sync>;

/// Named functions available to templates.
#[derive(Clone)]
pub struct FuncMap(HashMap<String, Function>);

impl Default for FuncMap {
    /// Go's builtins (`and`, `or`, `not`, `eq`…, `len`, `index`, `slice`,
    /// `print`, `printf`, `println`, `html`, `js`, `urlquery`).
    fn default() -> Self {
        let mut m = FuncMap(HashMap::new());
        funcs::register_builtins(&mut m);
        m
    }
}

impl FuncMap {
    pub fn insert(
        &mut self,
        name: &str,
        f: impl Fn(&[Value]) -> Result<Value, String> + Send + Sync + 'static,
    ) {
        self.0.insert(name.to_string(), Arc::new(f));
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name) || matches!(name, "and" | "or")
    }

    fn get(&self, name: &str) -> Option<&Function> {
        self.0.get(name)
    }
}

/// A set of named templates (Go's `*template.Template` with its
/// associated templates).
#[derive(Clone, Default)]
pub struct Templates {
    defs: HashMap<String, Arc<Vec<Node>>>,
    funcs: FuncMap,
}

const MAX_DEPTH: usize = 100;

impl Templates {
    pub fn new(funcs: FuncMap) -> Self {
        Self {
            defs: HashMap::new(),
            funcs,
        }
    }

    pub fn funcs_mut(&mut self) -> &mut FuncMap {
        &mut self.funcs
    }

    /// Parses `src` as the template `name` and adds the templates it
    /// defines (a later definition replaces an earlier one).
    pub fn add(&mut self, name: &str, src: &str) -> Result<(), TemplateError> {
        let parsed = parse::parse(src).map_err(|e| match e {
            TemplateError::Parse(m) => TemplateError::Parse(format!("{name}: {m}")),
            other => other,
        })?;
        self.check_funcs(&parsed.root)?;
        for (_, body) in &parsed.defines {
            self.check_funcs(body)?;
        }
        for (n, body) in parsed.defines {
            self.defs.insert(n, Arc::new(body));
        }
        if !parsed
            .root
            .iter()
            .all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()))
            || !self.defs.contains_key(name)
        {
            self.defs.insert(name.to_string(), Arc::new(parsed.root));
        }
        Ok(())
    }

    pub fn has(&self, name: &str) -> bool {
        self.defs.contains_key(name)
    }

    fn check_funcs(&self, nodes: &[Node]) -> Result<(), TemplateError> {
        fn pipe(t: &Templates, p: &Pipe) -> Result<(), TemplateError> {
            for cmd in &p.cmds {
                for op in cmd {
                    match op {
                        Operand::Ident(name) if !t.funcs.contains(name) => {
                            return Err(TemplateError::Parse(format!(
                                "function {name:?} not defined"
                            )));
                        }
                        Operand::Sub(inner, _) => pipe(t, inner)?,
                        _ => {}
                    }
                }
            }
            Ok(())
        }
        for n in nodes {
            match n {
                Node::Action(p) => pipe(self, p)?,
                Node::If(b, o) | Node::With(b, o) => {
                    for (p, body) in b {
                        pipe(self, p)?;
                        self.check_funcs(body)?;
                    }
                    self.check_funcs(o)?;
                }
                Node::Range(p, b, o) => {
                    pipe(self, p)?;
                    self.check_funcs(b)?;
                    self.check_funcs(o)?;
                }
                Node::Template(_, Some(p)) => pipe(self, p)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Renders the template `name` with `data`.
    pub fn execute(&self, name: &str, data: &Value) -> Result<String, TemplateError> {
        let body = self
            .defs
            .get(name)
            .ok_or_else(|| exec_err(format!("no template {name:?} defined")))?
            .clone();
        let mut ex = Exec {
            t: self,
            vars: vec![("$".to_string(), data.clone())],
            depth: 0,
        };
        let mut out = String::new();
        ex.walk(&body, data, &mut out)?;
        Ok(out)
    }

    /// Parses `src` as a one-off template (it may call the set's templates)
    /// and renders it.
    pub fn render(&self, src: &str, data: &Value) -> Result<String, TemplateError> {
        if !src.contains("{{") {
            return Ok(src.to_string());
        }
        let mut t = self.clone();
        t.add("__inline__", src)?;
        t.execute("__inline__", data)
    }
}

enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'a> {
    t: &'a Templates,
    vars: Vec<(String, Value)>,
    depth: usize,
}

impl Exec<'_> {
    fn walk(
        &mut self,
        nodes: &[Node],
        dot: &Value,
        out: &mut String,
    ) -> Result<Flow, TemplateError> {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipe(p, dot)?;
                    if p.vars.is_empty() {
                        out.push_str(&v.as_string());
                    }
                }
                Node::If(branches, otherwise) | Node::With(branches, otherwise) => {
                    let with = matches!(node, Node::With(..));
                    let mark = self.vars.len();
                    let mut done = false;
                    for (cond, body) in branches {
                        let v = self.pipe(cond, dot)?;
                        if v.truthy() {
                            let flow = if with {
                                self.walk(body, &v, out)?
                            } else {
                                self.walk(body, dot, out)?
                            };
                            self.vars.truncate(mark);
                            if !matches!(flow, Flow::Normal) {
                                return Ok(flow);
                            }
                            done = true;
                            break;
                        }
                    }
                    if !done {
                        let flow = self.walk(otherwise, dot, out)?;
                        self.vars.truncate(mark);
                        if !matches!(flow, Flow::Normal) {
                            return Ok(flow);
                        }
                    }
                }
                Node::Range(p, body, otherwise) => {
                    let mark = self.vars.len();
                    let mut inner = p.clone();
                    let vars = std::mem::take(&mut inner.vars);
                    let v = self.pipe(&inner, dot)?;
                    let items: Vec<(Value, Value)> = match v {
                        Value::List(l) => l
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (Value::Int(i as i64), v))
                            .collect(),
                        Value::Map(m) | Value::Struct(m) => {
                            m.into_iter().map(|(k, v)| (Value::Str(k), v)).collect()
                        }
                        Value::Int(n) => (0..n.max(0))
                            .map(|i| (Value::Int(i), Value::Int(i)))
                            .collect(),
                        Value::Nil => Vec::new(),
                        other => return Err(exec_err(format!("range can't iterate over {other}"))),
                    };
                    if items.is_empty() {
                        self.walk(otherwise, dot, out)?;
                    }
                    for (k, v) in items {
                        match vars.len() {
                            0 => {}
                            1 => self.vars.push((vars[0].clone(), v.clone())),
                            _ => {
                                self.vars.push((vars[0].clone(), k));
                                self.vars.push((vars[1].clone(), v.clone()));
                            }
                        }
                        let flow = self.walk(body, &v, out)?;
                        self.vars.truncate(mark);
                        if matches!(flow, Flow::Break) {
                            break;
                        }
                    }
                    self.vars.truncate(mark);
                }
                Node::Template(name, p) => {
                    let data = match p {
                        Some(p) => self.pipe(p, dot)?,
                        None => Value::Nil,
                    };
                    let body = self
                        .t
                        .defs
                        .get(name)
                        .ok_or_else(|| exec_err(format!("no such template {name:?}")))?
                        .clone();
                    if self.depth >= MAX_DEPTH {
                        return Err(exec_err("exceeded maximum template depth (100)"));
                    }
                    let saved =
                        std::mem::replace(&mut self.vars, vec![("$".to_string(), data.clone())]);
                    self.depth += 1;
                    let r = self.walk(&body, &data, out);
                    self.depth -= 1;
                    self.vars = saved;
                    r?;
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn var(&self, name: &str) -> Result<Value, TemplateError> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| exec_err(format!("undefined variable: {name}")))
    }

    fn pipe(&mut self, p: &Pipe, dot: &Value) -> Result<Value, TemplateError> {
        let mut prev: Option<Value> = None;
        for cmd in &p.cmds {
            prev = Some(self.command(cmd, prev, dot)?);
        }
        let v = prev.unwrap_or(Value::Nil);
        if let Some(name) = p.vars.first() {
            if p.declare {
                self.vars.push((name.clone(), v.clone()));
            } else if let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
                slot.1 = v.clone();
            } else {
                return Err(exec_err(format!("undefined variable: {name}")));
            }
        }
        Ok(v)
    }

    fn command(
        &mut self,
        cmd: &[Operand],
        prev: Option<Value>,
        dot: &Value,
    ) -> Result<Value, TemplateError> {
        let Some(first) = cmd.first() else {
            return Ok(Value::Nil);
        };
        match first {
            Operand::Ident(name) => {
                // `and` and `or` short-circuit.
                if name == "and" || name == "or" {
                    let mut args: Vec<&Operand> = cmd[1..].iter().collect();
                    let mut last = Value::Nil;
                    let piped = prev;
                    if args.is_empty() && piped.is_none() {
                        return Err(exec_err(format!(
                            "wrong number of args for {name}: want at least 1 got 0"
                        )));
                    }
                    for a in args.drain(..) {
                        let v = self.operand(a, dot)?;
                        let stop = if name == "and" {
                            !v.truthy()
                        } else {
                            v.truthy()
                        };
                        if stop {
                            return Ok(v);
                        }
                        last = v;
                    }
                    if let Some(p) = piped {
                        return Ok(p);
                    }
                    return Ok(last);
                }
                let mut args = Vec::with_capacity(cmd.len());
                for a in &cmd[1..] {
                    args.push(self.operand(a, dot)?);
                }
                if let Some(p) = prev {
                    args.push(p);
                }
                let f = self
                    .t
                    .funcs
                    .get(name)
                    .ok_or_else(|| exec_err(format!("function {name:?} not defined")))?;
                f(&args).map_err(|m| exec_err(format!("error calling {name}: {m}")))
            }
            // A method call with arguments: `.Labels.Remove (stringSlice "a")`.
            Operand::Field(path) | Operand::Var(_, path) if cmd.len() > 1 || prev.is_some() => {
                let Some((method, head)) = path.split_last() else {
                    return Err(exec_err("can't give argument to non-function"));
                };
                let receiver = match first {
                    Operand::Var(n, _) => self.walk_fields(self.var(n)?, head)?,
                    _ => self.walk_fields(dot.clone(), head)?,
                };
                let mut args = Vec::new();
                for a in &cmd[1..] {
                    args.push(self.operand(a, dot)?);
                }
                if let Some(p) = prev {
                    args.push(p);
                }
                call_method(&receiver, method, &args)?.ok_or_else(|| {
                    exec_err(format!("can't give argument to non-function {method}"))
                })
            }
            op => {
                if cmd.len() > 1 || prev.is_some() {
                    return Err(exec_err("can't give argument to non-function"));
                }
                self.operand(op, dot)
            }
        }
    }

    fn operand(&mut self, op: &Operand, dot: &Value) -> Result<Value, TemplateError> {
        Ok(match op {
            Operand::Dot => dot.clone(),
            Operand::Field(path) => self.walk_fields(dot.clone(), path)?,
            Operand::Var(name, path) => {
                let v = self.var(name)?;
                self.walk_fields(v, path)?
            }
            Operand::Str(s) => Value::Str(s.clone()),
            Operand::Int(i) => Value::Int(*i),
            Operand::Float(f) => Value::Float(*f),
            Operand::Bool(b) => Value::Bool(*b),
            Operand::Nil => Value::Nil,
            Operand::Ident(name) => {
                let f = self
                    .t
                    .funcs
                    .get(name)
                    .ok_or_else(|| exec_err(format!("function {name:?} not defined")))?;
                f(&[]).map_err(|m| exec_err(format!("error calling {name}: {m}")))?
            }
            Operand::Sub(p, path) => {
                let v = self.pipe(p, dot)?;
                self.walk_fields(v, path)?
            }
        })
    }

    fn walk_fields(&self, mut v: Value, path: &[String]) -> Result<Value, TemplateError> {
        for field in path {
            v = match v {
                Value::Map(ref m) => match m.get(field) {
                    Some(x) => x.clone(),
                    None => match call_method(&v, field, &[])? {
                        Some(x) => x,
                        None => Value::Str(String::new()),
                    },
                },
                Value::Struct(ref m) => match m.get(field) {
                    Some(x) => x.clone(),
                    None => call_method(&v, field, &[])?.ok_or_else(|| {
                        exec_err(format!("can't evaluate field {field} in type struct"))
                    })?,
                },
                Value::Nil => return Err(exec_err(format!("nil pointer evaluating .{field}"))),
                ref other => call_method(other, field, &[])?.ok_or_else(|| {
                    exec_err(format!(
                        "can't evaluate field {field} in type {}",
                        type_name(other)
                    ))
                })?,
            };
        }
        Ok(v)
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float64",
        Value::Str(_) => "string",
        Value::List(_) => "slice",
        Value::Map(_) => "map",
        Value::Struct(_) => "struct",
        Value::Time(_) => "time.Time",
        Value::Duration(_) => "time.Duration",
    }
}

fn string_list(v: &Value) -> Vec<String> {
    match v {
        Value::List(l) => l.iter().map(Value::as_string).collect(),
        other => vec![other.as_string()],
    }
}

/// Methods of values, as Alertmanager's template types have them.
fn call_method(recv: &Value, name: &str, args: &[Value]) -> Result<Option<Value>, TemplateError> {
    Ok(Some(match (recv, name) {
        (Value::Map(m), "SortedPairs") => Value::List(
            m.iter()
                .map(|(k, v)| {
                    Value::Struct(
                        [
                            ("Name".to_string(), Value::Str(k.clone())),
                            ("Value".to_string(), v.clone()),
                        ]
                        .into(),
                    )
                })
                .collect(),
        ),
        (Value::Map(m), "Names") => Value::List(m.keys().map(|k| Value::Str(k.clone())).collect()),
        (Value::Map(m), "Values") => Value::List(m.values().cloned().collect()),
        (Value::Map(m), "Remove") => {
            let drop: Vec<String> = args.iter().flat_map(string_list).collect();
            Value::Map(
                m.iter()
                    .filter(|(k, _)| !drop.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            )
        }
        (Value::List(l), "Names" | "Values") => {
            let field = if name == "Names" { "Name" } else { "Value" };
            Value::List(
                l.iter()
                    .map(|p| match p {
                        Value::Struct(m) | Value::Map(m) => {
                            m.get(field).cloned().unwrap_or(Value::Nil)
                        }
                        other => other.clone(),
                    })
                    .collect(),
            )
        }
        (Value::List(l), "Firing" | "Resolved") => {
            let want = if name == "Firing" {
                "firing"
            } else {
                "resolved"
            };
            Value::List(
                l.iter()
                    .filter(|a| matches!(a, Value::Struct(m) | Value::Map(m) if m.get("Status").map(Value::as_string).as_deref() == Some(want)))
                    .cloned()
                    .collect(),
            )
        }
        (Value::Time(t), "Format") => {
            let layout = args.first().map(Value::as_string).unwrap_or_default();
            Value::Str(format_go_layout(&layout, t))
        }
        (Value::Time(t), "Unix") => Value::Int(t.timestamp()),
        (Value::Time(t), "UnixMilli") => Value::Int(t.timestamp_millis()),
        (Value::Time(t), "UTC") => Value::Time(t.with_timezone(&chrono::Utc).fixed_offset()),
        (Value::Time(t), "IsZero") => Value::Bool(t.timestamp() <= -62135596800),
        (Value::Duration(d), "Seconds") => Value::Float(*d as f64 / 1e9),
        (Value::Duration(d), "String") => Value::Str(format_go_duration(*d)),
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests;
