//! When an autoscale profile applies: a fixed date (a civil date-time read in its time
//! zone, or an instant) or a weekly recurrence (days, hours and minutes in a time zone).
//! Time zones are IANA names or the Windows names Azure uses, resolved once here.

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::ArmError;

use super::{AutoscaleProfile, ProfileWhen, RecurrenceFrequency};

/// Windows time-zone names (as Azure's recurrences use them) and their IANA zone.
const WINDOWS_ZONES: &[(&str, &str)] = &[
    ("Dateline Standard Time", "Etc/GMT+12"),
    ("UTC", "UTC"),
    ("UTC-11", "Etc/GMT+11"),
    ("Hawaiian Standard Time", "Pacific/Honolulu"),
    ("Alaskan Standard Time", "America/Anchorage"),
    ("Pacific Standard Time", "America/Los_Angeles"),
    ("US Mountain Standard Time", "America/Phoenix"),
    ("Mountain Standard Time", "America/Denver"),
    ("Central Standard Time", "America/Chicago"),
    ("Central America Standard Time", "America/Guatemala"),
    ("Canada Central Standard Time", "America/Regina"),
    ("Eastern Standard Time", "America/New_York"),
    ("SA Pacific Standard Time", "America/Bogota"),
    ("Atlantic Standard Time", "America/Halifax"),
    ("E. South America Standard Time", "America/Sao_Paulo"),
    ("Argentina Standard Time", "America/Argentina/Buenos_Aires"),
    ("Newfoundland Standard Time", "America/St_Johns"),
    ("GMT Standard Time", "Europe/London"),
    ("Greenwich Standard Time", "Atlantic/Reykjavik"),
    ("W. Europe Standard Time", "Europe/Berlin"),
    ("Central Europe Standard Time", "Europe/Budapest"),
    ("Central European Standard Time", "Europe/Warsaw"),
    ("Romance Standard Time", "Europe/Paris"),
    ("E. Europe Standard Time", "Europe/Chisinau"),
    ("FLE Standard Time", "Europe/Kiev"),
    ("GTB Standard Time", "Europe/Bucharest"),
    ("Turkey Standard Time", "Europe/Istanbul"),
    ("Israel Standard Time", "Asia/Jerusalem"),
    ("South Africa Standard Time", "Africa/Johannesburg"),
    ("Russian Standard Time", "Europe/Moscow"),
    ("Arabian Standard Time", "Asia/Dubai"),
    ("Pakistan Standard Time", "Asia/Karachi"),
    ("India Standard Time", "Asia/Kolkata"),
    ("Bangladesh Standard Time", "Asia/Dhaka"),
    ("SE Asia Standard Time", "Asia/Bangkok"),
    ("China Standard Time", "Asia/Shanghai"),
    ("Singapore Standard Time", "Asia/Singapore"),
    ("Taipei Standard Time", "Asia/Taipei"),
    ("Tokyo Standard Time", "Asia/Tokyo"),
    ("Korea Standard Time", "Asia/Seoul"),
    ("AUS Eastern Standard Time", "Australia/Sydney"),
    ("E. Australia Standard Time", "Australia/Brisbane"),
    ("Cen. Australia Standard Time", "Australia/Adelaide"),
    ("W. Australia Standard Time", "Australia/Perth"),
    ("New Zealand Standard Time", "Pacific/Auckland"),
];

/// Resolves a Windows (`Pacific Standard Time`) or IANA (`America/Los_Angeles`) name.
pub fn resolve_time_zone(name: &str) -> Option<TimeZone> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    if let Some((_, iana)) = WINDOWS_ZONES
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(name))
    {
        return TimeZone::get(iana).ok();
    }
    TimeZone::get(name).ok()
}

/// A day name (`Monday`, `mon`, any case), or a number as Azure's own examples send it
/// (`"1"`): .NET's `DayOfWeek`, Sunday = 0 … Saturday = 6, which Azure Monitor accepts.
fn parse_weekday(s: &str) -> Option<Weekday> {
    let s = s.trim().to_ascii_lowercase();
    if let Ok(n) = s.parse::<u8>() {
        let week = [
            Weekday::Sunday,
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday,
            Weekday::Saturday,
        ];
        return week.get(usize::from(n)).copied();
    }
    let all = [
        ("monday", Weekday::Monday),
        ("tuesday", Weekday::Tuesday),
        ("wednesday", Weekday::Wednesday),
        ("thursday", Weekday::Thursday),
        ("friday", Weekday::Friday),
        ("saturday", Weekday::Saturday),
        ("sunday", Weekday::Sunday),
    ];
    all.iter()
        .find(|(n, _)| *n == s || (s.len() == 3 && n.starts_with(&s)))
        .map(|(_, d)| *d)
}

/// A point in time: RFC 3339 with an offset, or a civil date-time read in `tz`.
fn parse_instant(s: &str, tz: &TimeZone) -> Option<Timestamp> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t);
    }
    let dt: jiff::civil::DateTime = s.trim().parse().ok()?;
    tz.to_zoned(dt).ok().map(|z| z.timestamp())
}

fn unknown_zone(target: &str, name: &str) -> ArmError {
    ArmError::invalid_parameter(
        target,
        format!("'{name}' is not a known time zone: use an IANA name (Europe/Berlin) or a Windows name (W. Europe Standard Time, Pacific Standard Time, UTC)."),
    )
}

fn bad_instant(target: &str, s: &str) -> ArmError {
    ArmError::invalid_parameter(
        target,
        format!("'{s}' is not a date-time: write e.g. 2026-11-22T09:00:00Z, or 2026-11-22T09:00:00 with fixedDate.timeZone."),
    )
}

/// When a profile applies: its fixed date, its weekly recurrence, or always (a default
/// profile). Time zones and instants are resolved here, once.
pub(super) fn profile_when(at: &str, p: &AutoscaleProfile) -> Result<ProfileWhen, ArmError> {
    Ok(match (&p.fixed_date, &p.recurrence) {
        (Some(_), Some(_)) => {
            return Err(ArmError::invalid_parameter(
                at,
                "A profile has either a fixedDate or a recurrence, not both.",
            ))
        }
        (Some(fd), None) => {
            let tz_name = fd.time_zone.as_deref().unwrap_or("UTC");
            let tz = resolve_time_zone(tz_name)
                .ok_or_else(|| unknown_zone(&format!("{at}.fixedDate.timeZone"), tz_name))?;
            let start = parse_instant(&fd.start, &tz)
                .ok_or_else(|| bad_instant(&format!("{at}.fixedDate.start"), &fd.start))?;
            let end = parse_instant(&fd.end, &tz)
                .ok_or_else(|| bad_instant(&format!("{at}.fixedDate.end"), &fd.end))?;
            if end <= start {
                return Err(ArmError::invalid_parameter(
                    format!("{at}.fixedDate.end"),
                    "The end is not after the start.",
                ));
            }
            ProfileWhen::Fixed { start, end }
        }
        (None, Some(rec)) => {
            if rec.frequency != RecurrenceFrequency::Week {
                return Err(ArmError::invalid_parameter(
                    format!("{at}.recurrence.frequency"),
                    format!(
                        "Recurrences repeat weekly, as in Azure: use Week (not {}).",
                        rec.frequency
                    ),
                ));
            }
            let s = &rec.schedule;
            let tz = resolve_time_zone(&s.time_zone).ok_or_else(|| {
                unknown_zone(&format!("{at}.recurrence.schedule.timeZone"), &s.time_zone)
            })?;
            if s.days.is_empty() || s.hours.is_empty() || s.minutes.is_empty() {
                return Err(ArmError::invalid_parameter(
                    format!("{at}.recurrence.schedule"),
                    "List at least one day, one hour and one minute the profile starts at.",
                ));
            }
            let mut days = Vec::new();
            for (k, d) in s.days.iter().enumerate() {
                days.push(parse_weekday(d).ok_or_else(|| {
                    ArmError::invalid_parameter(
                        format!("{at}.recurrence.schedule.days[{k}]"),
                        format!("'{d}' is not a day of the week: use Monday … Sunday."),
                    )
                })?);
            }
            for (k, h) in s.hours.iter().enumerate() {
                if !(0..=23).contains(h) {
                    return Err(ArmError::invalid_parameter(
                        format!("{at}.recurrence.schedule.hours[{k}]"),
                        format!("Hour {h} is out of range: use 0 to 23."),
                    ));
                }
            }
            for (k, m) in s.minutes.iter().enumerate() {
                if !(0..=59).contains(m) {
                    return Err(ArmError::invalid_parameter(
                        format!("{at}.recurrence.schedule.minutes[{k}]"),
                        format!("Minute {m} is out of range: use 0 to 59."),
                    ));
                }
            }
            let mut times = Vec::new();
            for h in &s.hours {
                for m in &s.minutes {
                    // Both ranges were checked above, so the casts are exact.
                    times.push((*h as i8, *m as i8));
                }
            }
            ProfileWhen::Weekly { tz, days, times }
        }
        (None, None) => ProfileWhen::Default,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_iana_zone_names_resolve() {
        for name in [
            "Pacific Standard Time",
            "W. Europe Standard Time",
            "UTC",
            "utc",
            "Europe/Berlin",
            "America/Los_Angeles",
            "Tokyo Standard Time",
        ] {
            assert!(resolve_time_zone(name).is_some(), "{name}");
        }
        assert!(resolve_time_zone("Pacific Time").is_none());
        assert!(resolve_time_zone("").is_none());
        // A civil fixed date is read in its zone: 09:00 in Berlin in winter is 08:00Z.
        let tz = resolve_time_zone("W. Europe Standard Time").unwrap();
        assert_eq!(
            parse_instant("2026-01-05T09:00:00", &tz).unwrap(),
            "2026-01-05T08:00:00Z".parse::<Timestamp>().unwrap()
        );
    }

    #[test]
    fn days_by_name_or_by_azure_number() {
        assert_eq!(parse_weekday("Monday"), Some(Weekday::Monday));
        assert_eq!(parse_weekday("sat"), Some(Weekday::Saturday));
        // Azure's createOrUpdateAutoscaleSetting example sends "1".
        assert_eq!(parse_weekday("1"), Some(Weekday::Monday));
        assert_eq!(parse_weekday("0"), Some(Weekday::Sunday));
        assert_eq!(parse_weekday("6"), Some(Weekday::Saturday));
        assert_eq!(parse_weekday("7"), None);
        assert_eq!(parse_weekday("Funday"), None);
    }
}
