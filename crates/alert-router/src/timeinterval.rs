//! Alertmanager's time intervals: `times`, `weekdays`, `days_of_month`,
//! `months`, `years` and `location` (an IANA zone read from the system's
//! zoneinfo files).

use chrono::{Datelike, FixedOffset, Offset, TimeZone, Timelike};
use serde::Deserialize;

use crate::model::Time;
pub use lucia_common::timezone::Zone;

/// One `time_intervals` entry as written in the file.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeIntervalSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<Vec<TimeRangeSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekdays: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_of_month: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub months: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub years: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRangeSpec {
    #[serde(default)]
    pub start_time: String,
    #[serde(default)]
    pub end_time: String,
}

/// A parsed interval: every present constraint must hold.
#[derive(Debug, Clone, Default)]
pub struct TimeInterval {
    times: Option<Vec<(u32, u32)>>,
    weekdays: Option<Vec<(u32, u32)>>,
    days_of_month: Option<Vec<(i32, i32)>>,
    months: Option<Vec<(u32, u32)>>,
    years: Option<Vec<(i32, i32)>>,
    location: Option<Zone>,
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn split_range(s: &str) -> (&str, &str) {
    match s.split_once(':') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    }
}

/// A range with optional leading minus signs: `-3:-1`, `1:5`, `7`.
fn split_signed_range(s: &str) -> Result<(i32, i32), String> {
    let s = s.trim();
    let parse = |t: &str| {
        t.trim()
            .parse::<i32>()
            .map_err(|_| format!("couldn't parse range {s}, invalid format"))
    };
    // A colon that is not the first character separates the bounds.
    match s[1.min(s.len())..].find(':') {
        Some(i) => Ok((parse(&s[..i + 1])?, parse(&s[i + 2..])?)),
        None => {
            let v = parse(s)?;
            Ok((v, v))
        }
    }
}

fn parse_clock(s: &str) -> Result<u32, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("couldn't parse timestamp {s}, invalid format"))?;
    let h: u32 = h
        .parse()
        .map_err(|_| format!("invalid timestamp format: {s}"))?;
    let m: u32 = m
        .parse()
        .map_err(|_| format!("invalid timestamp format: {s}"))?;
    if h > 24 || m > 59 || (h == 24 && m != 0) {
        return Err(format!("timestamp {s} out of range"));
    }
    Ok(h * 60 + m)
}

impl TimeInterval {
    pub fn parse(spec: &TimeIntervalSpec) -> Result<Self, String> {
        let mut out = TimeInterval::default();
        if let Some(times) = &spec.times {
            let mut v = Vec::new();
            for t in times {
                if t.start_time.is_empty() || t.end_time.is_empty() {
                    return Err("both start and end times must be provided".to_string());
                }
                let (a, b) = (parse_clock(&t.start_time)?, parse_clock(&t.end_time)?);
                if a >= b {
                    return Err("start time cannot be equal or greater than end time".to_string());
                }
                v.push((a, b));
            }
            out.times = Some(v);
        }
        if let Some(days) = &spec.weekdays {
            let mut v = Vec::new();
            for d in days {
                let (a, b) = split_range(d);
                let find = |n: &str| {
                    WEEKDAYS
                        .iter()
                        .position(|w| *w == n.to_lowercase())
                        .map(|i| i as u32)
                        .ok_or_else(|| format!("{n} is not a valid weekday"))
                };
                let (a, b) = (find(a)?, find(b)?);
                if b < a {
                    return Err("start day cannot be before end day".to_string());
                }
                v.push((a, b));
            }
            out.weekdays = Some(v);
        }
        if let Some(days) = &spec.days_of_month {
            let mut v = Vec::new();
            for d in days {
                let (a, b) = split_signed_range(d)?;
                if a == 0 || !(-31..=31).contains(&a) {
                    return Err(format!("{a} is not a valid day of the month: out of range"));
                }
                if b == 0 || !(-31..=31).contains(&b) {
                    return Err(format!("{b} is not a valid day of the month: out of range"));
                }
                if a < 0 && b > 0 {
                    return Err("end day must be negative if start day is negative".to_string());
                }
                if (a > 0 && b > 0 || a < 0 && b < 0) && b < a {
                    return Err(format!("end day {b} is always before start day {a}"));
                }
                v.push((a, b));
            }
            out.days_of_month = Some(v);
        }
        if let Some(months) = &spec.months {
            let mut v = Vec::new();
            for m in months {
                let (a, b) = split_range(m);
                let find = |n: &str| -> Result<u32, String> {
                    if let Ok(i) = n.parse::<u32>()
                        && (1..=12).contains(&i)
                    {
                        return Ok(i);
                    }
                    MONTHS
                        .iter()
                        .position(|w| *w == n.to_lowercase())
                        .map(|i| i as u32 + 1)
                        .ok_or_else(|| format!("{n} is not a valid month"))
                };
                let (a, b) = (find(a)?, find(b)?);
                if b < a {
                    return Err(format!("end month {b} is before start month {a}"));
                }
                v.push((a, b));
            }
            out.months = Some(v);
        }
        if let Some(years) = &spec.years {
            let mut v = Vec::new();
            for y in years {
                let (a, b) = split_range(y);
                let p = |t: &str| {
                    t.parse::<i32>()
                        .map_err(|_| format!("couldn't parse range {y}, invalid format"))
                };
                let (a, b) = (p(a)?, p(b)?);
                if b < a {
                    return Err(format!("end year {b} is before start year {a}"));
                }
                v.push((a, b));
            }
            out.years = Some(v);
        }
        if let Some(loc) = &spec.location {
            out.location = Some(Zone::load(loc)?);
        }
        Ok(out)
    }

    /// Whether `t` falls inside the interval.
    pub fn contains(&self, t: Time) -> bool {
        let offset = self
            .location
            .as_ref()
            .map(|z| z.offset_at(t.timestamp()))
            .unwrap_or(0);
        let tz = FixedOffset::east_opt(offset).unwrap_or(chrono::Utc.fix());
        let local = tz.from_utc_datetime(&t.naive_utc());
        if let Some(times) = &self.times {
            let minute = local.hour() * 60 + local.minute();
            if !times.iter().any(|(a, b)| minute >= *a && minute < *b) {
                return false;
            }
        }
        if let Some(days) = &self.days_of_month {
            let dim = days_in_month(local.year(), local.month()) as i32;
            let day = local.day() as i32;
            let inside = days.iter().any(|(a, b)| {
                let begin = if *a < 0 { dim + a + 1 } else { *a };
                let end = if *b < 0 { dim + b + 1 } else { *b };
                if begin > dim {
                    return false;
                }
                let begin = begin.clamp(-dim, dim);
                let end = end.clamp(-dim, dim);
                day >= begin && day <= end
            });
            if !inside {
                return false;
            }
        }
        if let Some(months) = &self.months {
            let m = local.month();
            if !months.iter().any(|(a, b)| m >= *a && m <= *b) {
                return false;
            }
        }
        if let Some(days) = &self.weekdays {
            let d = local.weekday().num_days_from_sunday();
            if !days.iter().any(|(a, b)| d >= *a && d <= *b) {
                return false;
            }
        }
        if let Some(years) = &self.years {
            let y = local.year();
            if !years.iter().any(|(a, b)| y >= *a && y <= *b) {
                return false;
            }
        }
        true
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (ny, nm) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    chrono::NaiveDate::from_ymd_opt(ny, nm, 1)
        .and_then(|d| d.pred_opt())
        .map(|d| d.day())
        .unwrap_or(31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_time;

    fn spec(yaml: &str) -> TimeIntervalSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn business_hours() {
        let ti = TimeInterval::parse(&spec(
            "times:\n- start_time: '09:00'\n  end_time: '17:00'\nweekdays: ['monday:friday']\n",
        ))
        .unwrap();
        // 2024-01-03 is a Wednesday.
        assert!(ti.contains(parse_time("2024-01-03T10:00:00Z").unwrap()));
        assert!(!ti.contains(parse_time("2024-01-03T17:00:00Z").unwrap()));
        assert!(!ti.contains(parse_time("2024-01-06T10:00:00Z").unwrap()));
    }

    #[test]
    fn days_months_years_and_zones() {
        let ti = TimeInterval::parse(&spec(
            "days_of_month: ['-1']\nmonths: ['february']\nyears: ['2024:2025']\n",
        ))
        .unwrap();
        assert!(ti.contains(parse_time("2024-02-29T10:00:00Z").unwrap()));
        assert!(!ti.contains(parse_time("2024-02-28T10:00:00Z").unwrap()));
        assert!(!ti.contains(parse_time("2026-02-28T10:00:00Z").unwrap()));
        assert!(TimeInterval::parse(&spec("weekdays: ['friday:monday']\n")).is_err());
        assert!(TimeInterval::parse(&spec("days_of_month: ['0']\n")).is_err());
        assert!(TimeInterval::parse(&spec("months: ['smarch']\n")).is_err());
        if std::path::Path::new("/usr/share/zoneinfo/Europe/Berlin").exists() {
            let ti = TimeInterval::parse(&spec(
                "times:\n- start_time: '09:00'\n  end_time: '10:00'\nlocation: Europe/Berlin\n",
            ))
            .unwrap();
            // 08:30 UTC is 09:30 in Berlin in winter, 10:30 in summer.
            assert!(ti.contains(parse_time("2024-01-03T08:30:00Z").unwrap()));
            assert!(!ti.contains(parse_time("2024-07-03T08:30:00Z").unwrap()));
        }
        assert!(Zone::load("Nowhere/Atlantis").is_err());
    }
}
