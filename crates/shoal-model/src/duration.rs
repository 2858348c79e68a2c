//! ISO 8601 durations as ARM uses them (`PT30M`, `PT10S`, `P1DT2H`), in whole seconds.

/// Parses `P[nD][T[nH][nM][nS]]` into seconds. Years, months and weeks are refused
/// (their length varies; ARM never uses them for these fields).
pub fn parse_iso8601(s: &str) -> Option<u64> {
    let s = s.trim();
    let rest = s.strip_prefix('P').or_else(|| s.strip_prefix('p'))?;
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut in_time = false;
    let mut number = String::new();
    let mut saw_unit = false;
    for c in rest.chars() {
        match c.to_ascii_uppercase() {
            'T' if !in_time && number.is_empty() => in_time = true,
            d if d.is_ascii_digit() => number.push(d),
            unit => {
                if number.is_empty() || number.len() > 9 {
                    return None;
                }
                let n: u64 = number.parse().ok()?;
                number.clear();
                let factor = match (in_time, unit) {
                    (false, 'D') => 86_400,
                    (true, 'H') => 3_600,
                    (true, 'M') => 60,
                    (true, 'S') => 1,
                    _ => return None,
                };
                total = total.checked_add(n.checked_mul(factor)?)?;
                saw_unit = true;
            }
        }
    }
    if !number.is_empty() || !saw_unit {
        return None;
    }
    Some(total)
}

/// Formats seconds as an ISO 8601 duration (`PT1H30M`, `PT0S`).
pub fn format_iso8601(secs: u64) -> String {
    let (d, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let mut out = String::from("P");
    if d > 0 {
        out.push_str(&format!("{d}D"));
    }
    if rem > 0 || d == 0 {
        out.push('T');
        if h > 0 {
            out.push_str(&format!("{h}H"));
        }
        if m > 0 {
            out.push_str(&format!("{m}M"));
        }
        if s > 0 || (h == 0 && m == 0) {
            out.push_str(&format!("{s}S"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arm_durations() {
        assert_eq!(parse_iso8601("PT30M"), Some(1800));
        assert_eq!(parse_iso8601("PT10S"), Some(10));
        assert_eq!(parse_iso8601("P1DT2H"), Some(93_600));
        assert_eq!(parse_iso8601("PT1H30M5S"), Some(5405));
        assert_eq!(parse_iso8601("PT"), None);
        assert_eq!(parse_iso8601("P"), None);
        assert_eq!(parse_iso8601("30M"), None);
        assert_eq!(parse_iso8601("P1M"), None);
        assert_eq!(parse_iso8601("PT5"), None);
    }

    proptest::proptest! {
        #[test]
        fn round_trips(secs in 0u64..10_000_000) {
            proptest::prop_assert_eq!(parse_iso8601(&format_iso8601(secs)), Some(secs));
        }
        #[test]
        fn never_panics(s in "\\PC{0,30}") { let _ = parse_iso8601(&s); }
    }
}
