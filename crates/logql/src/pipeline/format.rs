//! `line_format`, `label_format`, `decolorize`, `drop` and `keep`.

use lucia_common::matchers::Matcher;

use super::PipelineError;
use super::labels::{ERROR_DETAILS_LABEL, ERROR_LABEL, LabelCategory, LabelsBuilder};
use crate::ast::{LabelFormatOp, LabelSelector};
use crate::template::{Template, TemplateData};

pub const TEMPLATE_FORMAT_ERR: &str = "TemplateFormatErr";

/// The template's view of a line: its labels, the line and its timestamp.
struct Data<'a> {
    lbs: &'a LabelsBuilder,
    line: &'a str,
    ts: i64,
}

impl TemplateData for Data<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            ERROR_LABEL if self.lbs.has_err() => Some(self.lbs.err()),
            ERROR_DETAILS_LABEL if !self.lbs.err_details().is_empty() => {
                Some(self.lbs.err_details())
            }
            _ => self.lbs.get(name),
        }
    }
    fn line(&self) -> &str {
        self.line
    }
    fn timestamp_nanos(&self) -> i64 {
        self.ts
    }
}

#[derive(Debug)]
pub struct LineFormatStage {
    template: Template,
}

impl LineFormatStage {
    pub fn new(src: &str) -> Result<Self, PipelineError> {
        Ok(Self {
            template: Template::parse(src)?,
        })
    }

    /// Renders the new line into `out`; false (and `__error__`) when the
    /// template fails, leaving the line unchanged.
    pub fn render(&self, ts: i64, line: &str, lbs: &mut LabelsBuilder, out: &mut String) -> bool {
        out.clear();
        let data = Data { lbs, line, ts };
        match self.template.execute(&data, out) {
            Ok(()) => true,
            Err(e) => {
                lbs.set_err(TEMPLATE_FORMAT_ERR);
                lbs.set_err_details(&e.to_string());
                false
            }
        }
    }
}

#[derive(Debug)]
enum FormatOp {
    Rename { dst: String, src: String },
    Template { dst: String, template: Template },
}

#[derive(Debug)]
pub struct LabelFormatStage {
    ops: Vec<FormatOp>,
}

impl LabelFormatStage {
    pub fn new(ops: &[LabelFormatOp]) -> Result<Self, PipelineError> {
        let mut out = Vec::with_capacity(ops.len());
        let mut seen: Vec<&str> = Vec::new();
        for op in ops {
            let dst = match op {
                LabelFormatOp::Rename { dst, .. } | LabelFormatOp::Template { dst, .. } => dst,
            };
            if seen.contains(&dst.as_str()) {
                return Err(PipelineError::DuplicateLabelFormat(dst.clone()));
            }
            seen.push(dst);
            out.push(match op {
                LabelFormatOp::Rename { dst, src } => FormatOp::Rename {
                    dst: dst.clone(),
                    src: src.clone(),
                },
                LabelFormatOp::Template { dst, template } => FormatOp::Template {
                    dst: dst.clone(),
                    template: Template::parse(template)?,
                },
            });
        }
        Ok(Self { ops: out })
    }

    pub fn apply(&self, ts: i64, line: &str, lbs: &mut LabelsBuilder, buf: &mut String) {
        for op in &self.ops {
            match op {
                FormatOp::Rename { dst, src } => {
                    let Some((value, category)) = lbs.get_with_category(src) else {
                        continue;
                    };
                    buf.clear();
                    buf.push_str(value);
                    if dst != src {
                        lbs.del(src);
                    }
                    lbs.set(category, dst, buf);
                }
                FormatOp::Template { dst, template } => {
                    buf.clear();
                    let result = template.execute(&Data { lbs, line, ts }, buf);
                    match result {
                        Ok(()) => lbs.set(LabelCategory::Parsed, dst, buf),
                        Err(e) => {
                            lbs.set_err(TEMPLATE_FORMAT_ERR);
                            lbs.set_err_details(&e.to_string());
                        }
                    }
                }
            }
        }
    }
}

/// Removes ANSI escape sequences; true when `line` had some (the result
/// is then in `out`).
pub fn decolorize(line: &str, out: &mut String) -> bool {
    let b = line.as_bytes();
    if memchr::memchr(0x1b, b).is_none() && !line.contains('\u{9b}') {
        return false;
    }
    out.clear();
    let mut chars = line.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        let csi = match c {
            '\u{1b}' => match chars.peek() {
                Some((_, '[')) => {
                    chars.next();
                    true
                }
                Some((_, ']')) => {
                    // OSC: up to BEL or ESC \.
                    chars.next();
                    while let Some((_, c)) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            if let Some((_, '\\')) = chars.peek() {
                                chars.next();
                            }
                            break;
                        }
                    }
                    continue;
                }
                Some((_, c)) if ('@'..='_').contains(c) || "()#;?".contains(*c) => {
                    let c = *c;
                    chars.next();
                    if "()#".contains(c) {
                        chars.next();
                    }
                    continue;
                }
                _ => continue,
            },
            '\u{9b}' => true,
            c => {
                out.push(c);
                false
            }
        };
        if csi {
            // parameters and intermediates, then one final byte
            while let Some((_, c)) = chars.peek() {
                if ('\u{20}'..='\u{3f}').contains(c) {
                    chars.next();
                } else {
                    break;
                }
            }
            if let Some((_, c)) = chars.peek()
                && ('\u{40}'..='\u{7e}').contains(c)
            {
                chars.next();
            }
        }
    }
    true
}

#[derive(Debug)]
pub struct DropKeep {
    names: Vec<String>,
    matchers: Vec<Matcher>,
}

impl DropKeep {
    pub fn new(selectors: &[LabelSelector]) -> Self {
        let mut names = Vec::new();
        let mut matchers = Vec::new();
        for s in selectors {
            match s {
                LabelSelector::Name(n) => names.push(n.clone()),
                LabelSelector::Matcher(m) => matchers.push(m.clone()),
            }
        }
        Self { names, matchers }
    }

    fn remove(lbs: &mut LabelsBuilder, name: &str) {
        match name {
            ERROR_LABEL => lbs.reset_err(),
            ERROR_DETAILS_LABEL => lbs.reset_err_details(),
            _ => lbs.del(name),
        }
    }

    pub fn drop(&self, lbs: &mut LabelsBuilder) {
        for n in &self.names {
            Self::remove(lbs, n);
        }
        for m in &self.matchers {
            let present = match m.name.as_str() {
                ERROR_LABEL => lbs.has_err(),
                ERROR_DETAILS_LABEL => !lbs.err_details().is_empty(),
                n => lbs.get(n).is_some(),
            };
            if present && m.matches_value(lbs.value_for_matcher(&m.name)) {
                Self::remove(lbs, &m.name);
            }
        }
    }

    pub fn keep(&self, lbs: &mut LabelsBuilder) {
        let mut to_delete: Vec<String> = Vec::new();
        lbs.for_each(|name, value, _| {
            if name == ERROR_LABEL || name == ERROR_DETAILS_LABEL {
                return;
            }
            let keep = self.names.iter().any(|n| n == name)
                || self
                    .matchers
                    .iter()
                    .any(|m| m.name == name && m.matches_value(value));
            if !keep {
                to_delete.push(name.to_string());
            }
        });
        for n in &to_delete {
            lbs.del(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ansi() {
        let mut out = String::new();
        assert!(!decolorize("plaintext", &mut out));
        assert!(decolorize("\x1b[31mhello\x1b[0m", &mut out));
        assert_eq!(out, "hello");
        assert!(decolorize(
            "a\x1b[1;32;40mb\x1b[Kc\x1b]0;title\x07d",
            &mut out
        ));
        assert_eq!(out, "abcd");
        assert!(decolorize("x\u{9b}31my", &mut out));
        assert_eq!(out, "xy");
    }
}
