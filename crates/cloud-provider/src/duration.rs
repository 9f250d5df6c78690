//! Go's `time.ParseDuration` format, as upstream's duration flags and config
//! files take it ("15s", "5m0s", "1h30m", "500ms", "1.5h"), for the CCM's
//! flags and providers' config files alike.

use std::time::Duration;

/// Go's limit: a duration is an int64 of nanoseconds (about 290 years).
pub const MAX_GO_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// A duration [`parse_go_duration`] refused; the message names the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

impl From<DurationError> for String {
    fn from(e: DurationError) -> Self {
        e.0
    }
}

/// Parses `s`; a value beyond Go's range is an error, as in Go, never a
/// panic.
pub fn parse_go_duration(s: &str) -> Result<Duration, DurationError> {
    let err = || {
        DurationError(format!(
            "invalid duration {s:?} (want e.g. 10s, 5m, 1h30m, 500ms)"
        ))
    };
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return Err(err());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        if num_len == 0 {
            return Err(err());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    match Duration::try_from_secs_f64(total) {
        Ok(d) if d <= MAX_GO_DURATION => Ok(d),
        _ => Err(DurationError(format!(
            "invalid duration {s:?}: out of range (at most 2562047h47m16s)"
        ))),
    }
}

/// Go's `time.Duration.String()`: "0s", "1.5ms", "500ms", "1.5s", "5m0s",
/// "1h0m0.5s" (the seconds with up to nine decimals, trailing zeros cut).
pub fn format_go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    let fraction = |value: u128, unit: u128| {
        let (whole, rest) = (value / unit, value % unit);
        if rest == 0 {
            return whole.to_string();
        }
        let digits = unit.to_string().len() - 1;
        let decimals = format!("{rest:0digits$}");
        format!("{whole}.{}", decimals.trim_end_matches('0'))
    };
    match ns {
        0 => "0s".into(),
        1..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{}µs", fraction(ns, 1_000)),
        1_000_000..1_000_000_000 => format!("{}ms", fraction(ns, 1_000_000)),
        _ => {
            let seconds = ns / 1_000_000_000;
            let (h, m) = (seconds / 3600, (seconds % 3600) / 60);
            let s = fraction(ns % 60_000_000_000, 1_000_000_000);
            if h > 0 {
                format!("{h}h{m}m{s}s")
            } else if m > 0 {
                format!("{m}m{s}s")
            } else {
                format!("{s}s")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_prints_them() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(7), "7ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_millis(200), "200ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(15), "15s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(43200), "12h0m0s"),
            (Duration::from_millis(3_600_500), "1h0m0.5s"),
            (Duration::from_nanos(1_000_000_001), "1.000000001s"),
        ] {
            assert_eq!(format_go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("15s").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_go_duration("5m0s").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_go_duration("1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_go_duration("500ms").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_go_duration("1.5h").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(parse_go_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "10", "s", "10x", "-5s", "1h-5m", "1..5s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn out_of_range_is_an_error_not_a_panic() {
        assert_eq!(
            parse_go_duration("2562047h").unwrap(),
            Duration::from_secs(2562047 * 3600)
        );
        for huge in [
            "99999999999999999999h",
            "2562048h",
            "1e400s",
            "9999999999999999999999999999999999999999s",
        ] {
            let err = parse_go_duration(huge).unwrap_err().to_string();
            assert!(
                err.contains("out of range") || err.contains("invalid"),
                "{huge}: {err}"
            );
        }
    }
}
