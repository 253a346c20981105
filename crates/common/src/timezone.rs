//! Time zones from the system's zoneinfo files (TZif, as Go's `time`
//! package reads them): `$ZONEINFO` or `/usr/share/zoneinfo`. Used by the
//! alert router's time intervals and `tz` template function and by the
//! agent's `timestamp` stage `location`.

/// A time zone: UTC offsets from a TZif file's transitions, and after the
/// last one its footer's POSIX TZ rule (slim zoneinfo files stop listing
/// transitions once the rule describes them; fat ones stop at 2037).
#[derive(Debug, Clone)]
pub struct Zone {
    transitions: Vec<(i64, i32)>,
    initial: i32,
    rule: Option<PosixTz>,
}

impl Zone {
    /// Loads `name` (`UTC`, `Local`, or an IANA name such as
    /// `Europe/Berlin`) from `$ZONEINFO` or `/usr/share/zoneinfo`.
    pub fn load(name: &str) -> Result<Self, String> {
        if name.is_empty() || name == "UTC" || name == "Etc/UTC" {
            return Ok(Self {
                transitions: Vec::new(),
                initial: 0,
                rule: None,
            });
        }
        let path = if name == "Local" {
            std::path::PathBuf::from("/etc/localtime")
        } else {
            if name.contains("..") || name.starts_with('/') {
                return Err(format!("unknown time zone {name}"));
            }
            let dir =
                std::env::var("ZONEINFO").unwrap_or_else(|_| "/usr/share/zoneinfo".to_string());
            std::path::Path::new(&dir).join(name)
        };
        let bytes = std::fs::read(&path).map_err(|_| {
            format!(
                "unknown time zone {name}: no zoneinfo file {} (install tzdata)",
                path.display()
            )
        })?;
        Self::parse_tzif(&bytes).ok_or_else(|| format!("invalid zoneinfo file for {name}"))
    }

    fn parse_tzif(b: &[u8]) -> Option<Self> {
        fn be32(b: &[u8], at: usize) -> Option<u32> {
            Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
        }
        fn be64(b: &[u8], at: usize) -> Option<i64> {
            Some(i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
        }
        if b.get(0..4)? != b"TZif" {
            return None;
        }
        let version = *b.get(4)?;
        let counts = |at: usize| -> Option<[usize; 6]> {
            let mut c = [0usize; 6];
            for (i, slot) in c.iter_mut().enumerate() {
                *slot = be32(b, at + 20 + 4 * i)? as usize;
            }
            Some(c)
        };
        // [isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt]
        let c1 = counts(0)?;
        let (mut at, c, time_size) = if version >= b'2' {
            let v1_len = c1[3] * 5 + c1[4] * 6 + c1[5] + c1[2] * 8 + c1[1] + c1[0];
            let at = 44 + v1_len;
            (at + 44, counts(at)?, 8)
        } else {
            (44, c1, 4)
        };
        let (timecnt, typecnt) = (c[3], c[4]);
        let mut times = Vec::with_capacity(timecnt);
        for i in 0..timecnt {
            let t = if time_size == 8 {
                be64(b, at + 8 * i)?
            } else {
                i64::from(be32(b, at + 4 * i)? as i32)
            };
            times.push(t);
        }
        at += timecnt * time_size;
        let idx: Vec<usize> = b
            .get(at..at + timecnt)?
            .iter()
            .map(|i| *i as usize)
            .collect();
        at += timecnt;
        let mut types = Vec::with_capacity(typecnt);
        for i in 0..typecnt {
            let off = be32(b, at + 6 * i)? as i32;
            let isdst = *b.get(at + 6 * i + 4)?;
            types.push((off, isdst));
        }
        let initial = types
            .iter()
            .find(|(_, dst)| *dst == 0)
            .or(types.first())
            .map(|(o, _)| *o)
            .unwrap_or(0);
        let transitions = times
            .into_iter()
            .zip(idx)
            .filter_map(|(t, i)| types.get(i).map(|(o, _)| (t, *o)))
            .collect();
        // The v2+ footer: `\n<POSIX TZ>\n` after the 64-bit data.
        let rule = if version >= b'2' {
            let (leapcnt, isstdcnt, isutcnt, charcnt) = (c[2], c[1], c[0], c[5]);
            let footer = at + typecnt * 6 + charcnt + leapcnt * 12 + isstdcnt + isutcnt;
            b.get(footer..)
                .and_then(|rest| rest.strip_prefix(b"\n"))
                .and_then(|rest| rest.split(|c| *c == b'\n').next())
                .and_then(|tz| std::str::from_utf8(tz).ok())
                .and_then(PosixTz::parse)
        } else {
            None
        };
        Some(Self {
            transitions,
            initial,
            rule,
        })
    }

    /// Whether this is UTC (no transitions, no offset).
    pub fn is_utc(&self) -> bool {
        self.transitions.is_empty()
            && self.initial == 0
            && self
                .rule
                .as_ref()
                .is_none_or(|r| r.std == 0 && r.dst.is_none())
    }

    /// The Unix time of the wall-clock time `local` (seconds since the
    /// epoch as if the wall clock were UTC) in this zone, chosen as Go's
    /// `time.Date` does for wall-clock times that a DST change skips or
    /// repeats (in Europe: the standard-time offset for both).
    pub fn local_to_utc(&self, local: i64) -> i64 {
        let guess = self.offset_at(local);
        let offset = self.offset_at(local - i64::from(guess));
        local - i64::from(offset)
    }

    /// The UTC offset in seconds at Unix time `t`.
    pub fn offset_at(&self, t: i64) -> i32 {
        let after_last = self.transitions.last().is_none_or(|(at, _)| t >= *at);
        if after_last && let Some(rule) = &self.rule {
            return rule.offset_at(t);
        }
        match self.transitions.partition_point(|(at, _)| *at <= t) {
            0 => self.initial,
            n => self.transitions[n - 1].1,
        }
    }
}

/// A POSIX TZ rule such as `CET-1CEST,M3.5.0,M10.5.0/3`: offsets are
/// seconds east of UTC (the string has them west).
#[derive(Debug, Clone, PartialEq)]
struct PosixTz {
    std: i32,
    dst: Option<DstRule>,
}

#[derive(Debug, Clone, PartialEq)]
struct DstRule {
    offset: i32,
    /// Start and end as (day rule, local seconds after midnight).
    start: (RuleDay, i32),
    end: (RuleDay, i32),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum RuleDay {
    /// `Jn`: day 1..=365, February 29 never counted.
    Julian1(i64),
    /// `n`: day 0..=365, counting February 29.
    Julian0(i64),
    /// `Mm.w.d`: day `d` (0 = Sunday) of week `w` (5 = last) of month `m`.
    Month(u32, u32, u32),
}

impl PosixTz {
    fn parse(text: &str) -> Option<Self> {
        let mut rest = text;
        let _std_name = take_name(&mut rest)?;
        let std = -take_offset(&mut rest)?;
        if rest.is_empty() {
            return Some(Self { std, dst: None });
        }
        let _dst_name = take_name(&mut rest)?;
        let offset = if rest.starts_with(',') || rest.is_empty() {
            std + 3600
        } else {
            -take_offset(&mut rest)?
        };
        // Without rules POSIX leaves the dates to the implementation;
        // Go uses the US rules then.
        let (start, end) = if rest.is_empty() {
            (
                (RuleDay::Month(3, 2, 0), 7200),
                (RuleDay::Month(11, 1, 0), 7200),
            )
        } else {
            rest = rest.strip_prefix(',')?;
            let start = take_rule(&mut rest)?;
            rest = rest.strip_prefix(',')?;
            let end = take_rule(&mut rest)?;
            (start, end)
        };
        rest.is_empty().then_some(Self {
            std,
            dst: Some(DstRule { offset, start, end }),
        })
    }

    fn offset_at(&self, t: i64) -> i32 {
        let Some(dst) = &self.dst else {
            return self.std;
        };
        let year = chrono::DateTime::from_timestamp(t + i64::from(self.std), 0)
            .map_or(1970, |d| chrono::Datelike::year(&d));
        let start = rule_instant(year, dst.start) - i64::from(self.std);
        let end = rule_instant(year, dst.end) - i64::from(dst.offset);
        let in_dst = if start < end {
            t >= start && t < end
        } else {
            // Southern hemisphere: summer time spans the new year.
            !(t >= end && t < start)
        };
        if in_dst { dst.offset } else { self.std }
    }
}

/// A zone abbreviation: letters, or anything between `<` and `>`.
fn take_name<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let (name, after) = if let Some(quoted) = rest.strip_prefix('<') {
        let end = quoted.find('>')?;
        (&quoted[..end], &quoted[end + 1..])
    } else {
        let end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        (&rest[..end], &rest[end..])
    };
    if name.is_empty() {
        return None;
    }
    *rest = after;
    Some(name)
}

/// `[+-]hh[:mm[:ss]]` in seconds, as written (positive = west of UTC).
fn take_offset(rest: &mut &str) -> Option<i32> {
    let (sign, body) = match rest.as_bytes().first() {
        Some(b'-') => (-1, &rest[1..]),
        Some(b'+') => (1, &rest[1..]),
        _ => (1, *rest),
    };
    let end = body
        .find(|c: char| !c.is_ascii_digit() && c != ':')
        .unwrap_or(body.len());
    let mut seconds = 0i32;
    for (i, part) in body[..end].split(':').enumerate() {
        let n: i32 = part.parse().ok()?;
        seconds += n * [3600, 60, 1].get(i)?;
    }
    *rest = &body[end..];
    Some(sign * seconds)
}

/// A rule date with its optional `/time` (default 02:00).
fn take_rule(rest: &mut &str) -> Option<(RuleDay, i32)> {
    let end = rest.find([',', '/']).unwrap_or(rest.len());
    let day_text = &rest[..end];
    let day = if let Some(j) = day_text.strip_prefix('J') {
        RuleDay::Julian1(j.parse().ok()?)
    } else if let Some(m) = day_text.strip_prefix('M') {
        let mut parts = m.split('.').map(|p| p.parse::<u32>().ok());
        let (month, week, weekday) = (parts.next()??, parts.next()??, parts.next()??);
        if !(1..=12).contains(&month) || !(1..=5).contains(&week) || weekday > 6 {
            return None;
        }
        RuleDay::Month(month, week, weekday)
    } else {
        RuleDay::Julian0(day_text.parse().ok()?)
    };
    *rest = &rest[end..];
    let time = match rest.strip_prefix('/') {
        Some(after) => {
            *rest = after;
            take_offset(rest)?
        }
        None => 7200,
    };
    Some((day, time))
}

/// Seconds since the epoch, as if local time were UTC, of `rule` in `year`.
fn rule_instant(year: i32, (day, time): (RuleDay, i32)) -> i64 {
    use chrono::{Datelike, NaiveDate};
    let jan1 = NaiveDate::from_ymd_opt(year, 1, 1).unwrap_or_default();
    let date = match day {
        RuleDay::Julian1(n) => {
            // February 29 is not counted: day 60 is always March 1.
            let leap = NaiveDate::from_ymd_opt(year, 2, 29).is_some();
            let n = if leap && n >= 60 { n } else { n - 1 };
            jan1 + chrono::Days::new(n.max(0) as u64)
        }
        RuleDay::Julian0(n) => jan1 + chrono::Days::new(n.max(0) as u64),
        RuleDay::Month(month, week, weekday) => {
            let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(jan1);
            let first_weekday = first.weekday().num_days_from_sunday();
            let mut day = 1 + (weekday + 7 - first_weekday) % 7 + (week - 1) * 7;
            let days_in_month = first
                .checked_add_months(chrono::Months::new(1))
                .and_then(|next| next.pred_opt())
                .map_or(31, |last| last.day());
            while day > days_in_month {
                day -= 7;
            }
            first.with_day(day).unwrap_or(first)
        }
    };
    let midnight = date
        .and_hms_opt(0, 0, 0)
        .map_or(0, |d| d.and_utc().timestamp());
    midnight + i64::from(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> Option<Zone> {
        std::path::Path::new("/usr/share/zoneinfo/Europe/Berlin")
            .exists()
            .then(|| Zone::load("Europe/Berlin").unwrap())
    }

    #[test]
    fn utc_and_unknown_zones() {
        let utc = Zone::load("UTC").unwrap();
        assert!(utc.is_utc());
        assert_eq!(utc.local_to_utc(1_000), 1_000);
        let err = Zone::load("Nowhere/Atlantis").unwrap_err();
        assert!(err.contains("unknown time zone Nowhere/Atlantis"), "{err}");
        assert!(Zone::load("../etc/passwd").is_err());
    }

    #[test]
    fn berlin_offsets_and_dst() {
        let Some(zone) = berlin() else { return };
        // 2024-01-15T12:00:00Z (winter, +01:00) and 2024-07-15T12:00:00Z
        // (summer, +02:00).
        assert_eq!(zone.offset_at(1_705_320_000), 3600);
        assert_eq!(zone.offset_at(1_721_044_800), 7200);
        // Wall clock 2024-07-15 14:00 in Berlin is 12:00 UTC.
        assert_eq!(zone.local_to_utc(1_721_044_800 + 7200), 1_721_044_800);
        // 2024-03-31 02:30 does not exist (clocks jump 02:00 -> 03:00):
        // taken with the offset before the jump, as Go does (01:30 UTC).
        let skipped = 1_711_852_200; // 2024-03-31T02:30:00 as if UTC
        assert_eq!(zone.local_to_utc(skipped), skipped - 3600);
        // 2024-10-27 02:30 happens twice; Go takes the second (winter) one.
        let repeated = 1_729_996_200; // 2024-10-27T02:30:00 as if UTC
        assert_eq!(zone.local_to_utc(repeated), repeated - 3600);
        // Past the file's transitions (2037 in fat files) the footer's
        // rule goes on: 2050-07-01 is summer, 2050-01-01 winter.
        assert_eq!(zone.offset_at(2_540_246_400), 7200);
        assert_eq!(zone.offset_at(2_524_608_000), 3600);
    }

    #[test]
    fn posix_rules() {
        let berlin = PosixTz::parse("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // 2024's switches: 2024-03-31T01:00:00Z and 2024-10-27T01:00:00Z.
        assert_eq!(berlin.offset_at(1_711_846_799), 3600);
        assert_eq!(berlin.offset_at(1_711_846_800), 7200);
        assert_eq!(berlin.offset_at(1_729_990_799), 7200);
        assert_eq!(berlin.offset_at(1_729_990_800), 3600);
        // Southern hemisphere, quoted names: Sydney is +11 in January.
        let sydney = PosixTz::parse("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
        assert_eq!(sydney.offset_at(1_705_320_000), 11 * 3600);
        assert_eq!(sydney.offset_at(1_721_044_800), 10 * 3600);
        let fixed = PosixTz::parse("<+0530>-5:30").unwrap();
        assert_eq!(fixed.offset_at(0), 5 * 3600 + 1800);
        assert!(PosixTz::parse("").is_none());
        assert!(PosixTz::parse("CET-1CEST,M13.5.0,M10.5.0").is_none());
    }
}
