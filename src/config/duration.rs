//! Durations in the file: `"500ms"`, `"5s"`, `"1h 30m"`.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Parses a duration with humantime: a number and a unit, `"500ms"`, `"5s"`, `"2m"`,
/// `"1h"`, `"1.5s"`, or several parts, `"1h 30m"` (humantime also spells the units out:
/// `sec`, `min`, `hours`, ... and knows `d` and `w`). Months and years are refused: their
/// length is a calendar convention, not a fixed duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const HINT: &str = "write a number and a unit, e.g. \"500ms\", \"5s\", \"2m\" or \"1h 30m\"";
    let s = s.trim();
    let calendar = ["M", "month", "months", "y", "yr", "yrs", "year", "years"];
    if let Some(unit) = s
        .split(|c: char| !c.is_alphabetic())
        .find(|u| calendar.contains(u))
    {
        return Err(format!(
            "{s:?} is not a duration: {unit:?} is a calendar unit; {HINT}"
        ));
    }
    humantime::parse_duration(s).map_err(|e| match e {
        // humantime's own text lists months and years, which are refused above.
        humantime::DurationError::UnknownUnit { unit, .. } if !unit.is_empty() => {
            format!("{s:?} is not a duration: unknown unit {unit:?}; {HINT}")
        }
        e => format!("{s:?} is not a duration ({e}); {HINT}"),
    })
}

/// Serde adapter for duration strings.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |t: &str| parse_duration(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        // Every form the README, config/example.toml and the tests use, and the decimals the
        // hand-written parser accepted.
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("200ms"), Duration::from_millis(200));
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok(" 5s "), Duration::from_secs(5));
        assert_eq!(ok("60s"), Duration::from_secs(60));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("10m"), Duration::from_secs(600));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0.5m"), Duration::from_secs(30));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("1h 30m"), Duration::from_secs(5400));
        for bad in ["5", "", "s", "5y", "1 month", "5x", "-1s", "1e3s"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(
                e.contains("is not a duration") && e.contains("\"5s\""),
                "{bad}: {e}"
            );
        }
    }
}
