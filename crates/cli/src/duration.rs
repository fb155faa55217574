//! Durations as operators write them: `90s`, `15m`, `720h`, `30d`, compounds such
//! as `1h30m` or `2d12h` (units largest first, each once), or plain seconds.

use std::time::Duration;

/// The units, largest first, with their length in seconds.
const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3600), ('m', 60), ('s', 1)];

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let invalid = || format!("invalid duration {s:?}: expected e.g. 30s, 15m, 1h30m, 7d");
    let secs = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>().map_err(|_| invalid())?
    } else {
        let mut secs = 0u64;
        let mut rest = s;
        // Index into UNITS past the last unit used: units come largest first.
        let mut next_unit = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .ok_or_else(invalid)?;
            let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            let unit = rest[digits..].chars().next().ok_or_else(invalid)?;
            let Some(i) = UNITS.iter().position(|(u, _)| *u == unit) else {
                return Err(format!(
                    "invalid duration unit {unit:?} in {s:?}: use d, h, m or s (e.g. 1h30m)"
                ));
            };
            if i < next_unit {
                return Err(format!(
                    "invalid duration {s:?}: write units largest first, each once (e.g. 1h30m)"
                ));
            }
            next_unit = i + 1;
            secs = secs.saturating_add(n.saturating_mul(UNITS[i].1));
            rest = &rest[digits + unit.len_utf8()..];
        }
        secs
    };
    if secs == 0 {
        return Err(format!("duration {s:?} must be more than zero"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn secs(s: &str) -> u64 {
        parse_duration(s).unwrap().as_secs()
    }

    #[test]
    fn units() {
        assert_eq!(secs("15m"), 900);
        assert_eq!(secs("720h"), 720 * 3600);
        assert_eq!(secs("45"), 45);
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("7d"), 7 * 86_400);
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn compounds() {
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs("2d12h"), 2 * 86_400 + 12 * 3600);
        assert_eq!(secs("1d1h1m1s"), 86_400 + 3600 + 60 + 1);
        assert_eq!(secs("0h15m"), 900);
    }

    #[test]
    fn malformed_compounds_are_refused() {
        for bad in [
            "30m1h", "1h1h", "1h30", "h", "1h 30m", "1w", "-1h", "1.5h", "0h0m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn huge_values_saturate_instead_of_overflowing() {
        assert_eq!(secs("9999999999999999999d"), u64::MAX);
    }
}
