//! Times as clients send them in queries. RFC 3339 is the rule, but the `az` CLI sends
//! times without a zone (`az monitor activity-log list --offset 1h`:
//! `2026-12-05T01:34:59.277371`) and percent-encodes a metrics `timespan` twice
//! (`2026-12-05T01%3A34%3A59.277371%2F2026-12-05T02%3A34%3A59.277371` after the first
//! decoding). Azure reads both as UTC; so does Shoal.

use jiff::{civil::DateTime, tz::TimeZone, Timestamp};

/// Epoch seconds as RFC 3339 text ("" for a time jiff cannot hold).
pub fn epoch_text(secs: i64) -> String {
    Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// An RFC 3339 time, or a date-time without a zone read as UTC.
pub fn parse_utc(s: &str) -> Option<Timestamp> {
    let s = s.trim();
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t);
    }
    let civil: DateTime = s.parse().ok()?;
    civil.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// A query value that still holds percent-escapes (`%3A`, `%2F`) after the server's
/// decoding, decoded once more; anything else as it is.
pub fn decode_again(s: &str) -> std::borrow::Cow<'_, str> {
    let escaped = s
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    match escaped {
        true => std::borrow::Cow::Owned(crate::server::decode(s)),
        false => std::borrow::Cow::Borrowed(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn what_az_sends_is_utc() {
        let z: Timestamp = "2026-12-05T01:34:59.277371Z".parse().unwrap();
        assert_eq!(parse_utc("2026-12-05T01:34:59.277371"), Some(z));
        assert_eq!(parse_utc("2026-12-05T01:34:59.277371Z"), Some(z));
        assert_eq!(
            parse_utc("2026-12-05T02:34:59.277371+01:00"),
            Some(z),
            "a zone is honoured"
        );
        assert_eq!(parse_utc("yesterday"), None);
        assert_eq!(
            decode_again("2026-12-05T01%3A34%3A59%2F2026-12-05T02%3A34%3A59"),
            "2026-12-05T01:34:59/2026-12-05T02:34:59"
        );
        assert_eq!(decode_again("PT1H"), "PT1H");
    }

    proptest! {
        #[test]
        fn any_text_is_read_without_panic(s in "\\PC{0,40}") {
            let _ = parse_utc(&s);
            let _ = decode_again(&s);
        }

        #[test]
        fn a_time_without_a_zone_is_the_same_time_in_utc(secs in 0i64..4_000_000_000, micros in 0u32..1_000_000) {
            let t = Timestamp::new(secs, (micros * 1000) as i32).unwrap();
            let naive = t.to_zoned(TimeZone::UTC).datetime().to_string();
            prop_assert_eq!(parse_utc(&naive), Some(t));
        }
    }
}
