//! `| unwrap label`, `| unwrap bytes(label)`, `| unwrap duration(label)`
//! with its post filters.

use super::PipelineError;
use super::label_filter::{LabelFilterStage, parse_bytes, parse_go_duration, parse_go_float};
use super::labels::LabelsBuilder;
use crate::ast::{Unwrap, UnwrapConversion};

pub const SAMPLE_EXTRACTION_ERR: &str = "SampleExtractionErr";

#[derive(Debug)]
pub struct UnwrapStage {
    label: String,
    conversion: Option<UnwrapConversion>,
    post_filters: Vec<LabelFilterStage>,
}

impl UnwrapStage {
    pub fn new(unwrap: &Unwrap) -> Result<Self, PipelineError> {
        Ok(Self {
            label: unwrap.label.clone(),
            conversion: unwrap.conversion,
            post_filters: unwrap
                .post_filters
                .iter()
                .map(LabelFilterStage::new)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Converts a label value to a sample.
    pub fn convert(conversion: Option<UnwrapConversion>, value: &str) -> Result<f64, String> {
        match conversion {
            None => parse_go_float(value),
            Some(UnwrapConversion::Bytes) => parse_bytes(value).map(|b| b as f64),
            Some(UnwrapConversion::Duration | UnwrapConversion::DurationSeconds) => {
                parse_go_duration(value).map(|ns| ns as f64 / 1e9)
            }
        }
    }

    /// The sample of the line; sets `__error__` on a conversion failure
    /// (the value is then 0), applies the post filters and removes the
    /// unwrapped label. `None` when the label is missing or empty or a post
    /// filter drops the line.
    pub fn extract(&self, lbs: &mut LabelsBuilder) -> Option<f64> {
        let raw = lbs.get(&self.label).filter(|v| !v.is_empty())?;
        let value = match Self::convert(self.conversion, raw) {
            Ok(v) => v,
            Err(e) => {
                lbs.set_err(SAMPLE_EXTRACTION_ERR);
                lbs.set_err_details(&e);
                0.0
            }
        };
        for f in &self.post_filters {
            if !f.keep(lbs) {
                return None;
            }
        }
        lbs.del(&self.label);
        Some(value)
    }
}
