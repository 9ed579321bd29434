//! Durations as the CRDs and flags spell them, parsed in one place for every
//! reconciler, runner, command and the console.

use std::fmt;
use std::str::FromStr;

/// A Go-style duration (`90s`, `5m`, `1h30m`, `1.5s`, `500ms`), the form the
/// apiserver's CEL rules admit in Tracker, TraceQuery and KeyEventNotification specs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(std::time::Duration);

/// A string that is not a duration; the message names the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration such as {examples}")]
pub struct DurationError {
    text: String,
    examples: &'static str,
}

impl Duration {
    /// Parses a Go-style duration.
    pub fn parse(s: &str) -> Result<Duration, DurationError> {
        go(s).map(Duration).ok_or_else(|| DurationError {
            text: s.to_string(),
            examples: "90s, 15m or 1h30m",
        })
    }

    /// A span back in time for people: whole days (`7d`) or a Go-style duration
    /// (`24h`, `90m`). Used by `query --since`, `verify --since` and the console.
    pub fn parse_span(s: &str) -> Result<Duration, DurationError> {
        let days = match s.strip_suffix('d').map(str::parse::<u64>) {
            Some(Ok(days)) if days > 0 => days.checked_mul(86_400).map(std::time::Duration::from_secs),
            Some(_) => None,
            None => go(s),
        };
        days.map(Duration).ok_or_else(|| DurationError {
            text: s.to_string(),
            examples: "7d, 24h or 15m",
        })
    }

    /// The spec's value, or `default` when it does not parse (the CRD's CEL rules
    /// keep such values out; a default keeps a runner going if one slips through).
    pub fn or(s: &str, default: std::time::Duration) -> std::time::Duration {
        Duration::parse(s).map_or(default, Duration::get)
    }

    /// The standard library value.
    pub fn get(self) -> std::time::Duration {
        self.0
    }

    /// Whole milliseconds, as trace times count them.
    pub fn as_millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Duration::parse(s)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

fn go(s: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += value * factor;
        rest = &rest[unit_end..];
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    fn d(s: &str) -> Option<Std> {
        Duration::parse(s).ok().map(Duration::get)
    }

    fn span(s: &str) -> Option<Std> {
        Duration::parse_span(s).ok().map(Duration::get)
    }

    #[test]
    fn go_durations() {
        assert_eq!(d("60s"), Some(Std::from_secs(60)));
        assert_eq!(d("1m30s"), Some(Std::from_secs(90)));
        assert_eq!(d("1.5s"), Some(Std::from_millis(1500)));
        assert_eq!(d("500ms"), Some(Std::from_millis(500)));
        assert_eq!(d("2h"), Some(Std::from_secs(7200)));
        assert_eq!(
            "15m".parse::<Duration>().map(Duration::get),
            Ok(Std::from_secs(900))
        );
        for bad in ["", "5", "5d", "h", "1x", "1e400s"] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn spans_take_days_too() {
        assert_eq!(span("7d"), Some(Std::from_secs(7 * 86_400)));
        assert_eq!(span("24h"), Some(Std::from_secs(86_400)));
        assert_eq!(span("0d"), None);
        assert_eq!(span("d"), None);
        assert_eq!(span("xd"), None);
        assert_eq!(span("soon"), None);
    }

    #[test]
    fn errors_name_the_text_and_the_forms() {
        let e = Duration::parse("soon").unwrap_err().to_string();
        assert_eq!(e, r#""soon" is not a duration such as 90s, 15m or 1h30m"#);
        let e = Duration::parse_span("5y").unwrap_err().to_string();
        assert_eq!(e, r#""5y" is not a duration such as 7d, 24h or 15m"#);
    }

    #[test]
    fn a_bad_spec_value_falls_back_to_the_default() {
        assert_eq!(Duration::or("bogus", Std::from_secs(60)), Std::from_secs(60));
        assert_eq!(Duration::or("2m", Std::from_secs(60)), Std::from_secs(120));
    }
}
