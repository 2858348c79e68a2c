//! Which autoscale profile is in effect at a given time: a fixed date containing it, else
//! the weekly recurrence that started most recently (in its own time zone, across
//! daylight-saving changes), else the default profile. Pure: the evaluator passes the
//! compiled setting and `now`.

use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use shoal_model::autoscale::{Compiled, CompiledProfile, ProfileWhen};

/// The start of the most recent occurrence of a weekly schedule at or before `now`, in
/// `tz`. A start in a daylight-saving gap moves forward (02:30 → 03:30), a start in a
/// fold uses its first occurrence.
pub fn last_weekly_start(
    tz: &TimeZone,
    days: &[Weekday],
    times: &[(i8, i8)],
    now: Timestamp,
) -> Option<Timestamp> {
    let today = now.to_zoned(tz.clone()).date();
    let mut best: Option<Timestamp> = None;
    for back in 0..=7i64 {
        let Ok(date) = today.checked_sub(back.days()) else {
            continue;
        };
        if !days.contains(&date.weekday()) {
            continue;
        }
        for &(h, m) in times {
            let Ok(z) = tz.to_zoned(date.at(h, m, 0, 0)) else {
                continue;
            };
            let t = z.timestamp();
            if t <= now && best.is_none_or(|b| t > b) {
                best = Some(t);
            }
        }
    }
    best
}

/// The profile in effect at `now`: a fixed date containing it, else the recurrence that
/// started most recently, else the first default profile.
pub fn select_profile(setting: &Compiled, now: Timestamp) -> Option<&CompiledProfile> {
    if let Some(p) = setting
        .profiles
        .iter()
        .find(|p| matches!(p.when, ProfileWhen::Fixed { start, end } if start <= now && now < end))
    {
        return Some(p);
    }
    let mut best: Option<(Timestamp, &CompiledProfile)> = None;
    for p in &setting.profiles {
        if let ProfileWhen::Weekly { tz, days, times } = &p.when {
            if let Some(t) = last_weekly_start(tz, days, times, now) {
                if best.is_none_or(|(b, _)| t > b) {
                    best = Some((t, p));
                }
            }
        }
    }
    if let Some((_, p)) = best {
        return Some(p);
    }
    setting
        .profiles
        .iter()
        .find(|p| matches!(p.when, ProfileWhen::Default))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    use super::super::tests::{cpu_profile, setting, ts, Fake, NOW};
    use super::super::{evaluate, LastAction};

    fn weekly(tz: &str, days: &[&str], hour: i64, minute: i64, name: &str, cap: i64) -> Value {
        json!({"name": name, "capacity": {"minimum": cap.to_string(), "maximum": cap.to_string(), "default": cap.to_string()}, "rules": [],
            "recurrence": {"frequency": "Week", "schedule": {"timeZone": tz, "days": days, "hours": [hour], "minutes": [minute]}}})
    }

    #[test]
    fn recurrence_switches_at_the_scheduled_minute_in_its_zone() {
        // Weekdays at 09:00 Pacific: 5; weekdays at 17:00 Pacific: 2. 2026-11-23 is a Monday
        // (PST, UTC−8): 09:00 PST = 17:00Z.
        let days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"];
        let s = setting(json!([
            weekly("Pacific Standard Time", &days, 9, 0, "day", 5),
            weekly("America/Los_Angeles", &days, 17, 0, "night", 2),
            {"name": "default", "capacity": {"minimum": "1", "maximum": "1", "default": "1"}, "rules": []}
        ]));
        let name = |t: &str| select_profile(&s, ts(t)).map(|p| p.name.clone());
        assert_eq!(name("2026-11-23T16:59:59Z").as_deref(), Some("night")); // Friday's night lasts over the weekend
        assert_eq!(name("2026-11-23T17:00:00Z").as_deref(), Some("day"));
        assert_eq!(name("2026-11-24T00:59:59Z").as_deref(), Some("day"));
        assert_eq!(name("2026-11-24T01:00:00Z").as_deref(), Some("night"));
        let none = Fake::default();
        let d = evaluate(
            &s,
            &none,
            2,
            LastAction::default(),
            ts("2026-11-23T17:00:00Z"),
        );
        assert_eq!(d.new_capacity, Some(5));
        assert_eq!(d.profile.as_deref(), Some("day"));
    }

    #[test]
    fn recurrence_across_daylight_saving_changes() {
        // Berlin springs forward on 2026-03-29 at 02:00 → 03:00 (UTC+1 → UTC+2).
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let sun = [Weekday::Sunday];
        // 09:00 local the day of the change is 07:00Z (summer time already).
        assert_eq!(
            last_weekly_start(&tz, &sun, &[(9, 0)], ts("2026-03-29T07:00:00Z")),
            Some(ts("2026-03-29T07:00:00Z"))
        );
        assert_eq!(
            last_weekly_start(&tz, &sun, &[(9, 0)], ts("2026-03-29T06:59:59Z")),
            Some(ts("2026-03-22T08:00:00Z"))
        );
        // 02:30 does not exist that day: it starts at 03:30 local (01:30Z).
        assert_eq!(
            last_weekly_start(&tz, &sun, &[(2, 30)], ts("2026-03-29T01:30:00Z")),
            Some(ts("2026-03-29T01:30:00Z"))
        );
        assert_eq!(
            last_weekly_start(&tz, &sun, &[(2, 30)], ts("2026-03-29T01:29:59Z")),
            Some(ts("2026-03-22T01:30:00Z"))
        );
        // Back on 2026-10-25 at 03:00 → 02:00: 02:30 happens twice; the first counts (00:30Z).
        assert_eq!(
            last_weekly_start(&tz, &sun, &[(2, 30)], ts("2026-10-25T00:30:00Z")),
            Some(ts("2026-10-25T00:30:00Z"))
        );
        assert_eq!(
            last_weekly_start(&tz, &sun, &[(2, 30)], ts("2026-10-25T01:30:00Z")),
            Some(ts("2026-10-25T00:30:00Z"))
        );
        // The Windows name resolves to the same zone.
        let s = setting(json!([weekly(
            "W. Europe Standard Time",
            &["Sunday"],
            9,
            0,
            "sun",
            3
        )]));
        assert_eq!(
            select_profile(&s, ts("2026-03-29T07:00:00Z")).map(|p| p.name.as_str()),
            Some("sun")
        );
    }

    #[test]
    fn fixed_date_beats_recurrence_beats_default() {
        let s = setting(json!([
            {"name": "default", "capacity": {"minimum": "1", "maximum": "1", "default": "1"}, "rules": []},
            weekly("UTC", &["Sunday"], 9, 0, "sunday", 3),
            {"name": "launch", "capacity": {"minimum": "8", "maximum": "8", "default": "8"}, "rules": [],
             "fixedDate": {"timeZone": "Tokyo Standard Time", "start": "2026-11-22T20:00:00", "end": "2026-11-22T21:00:00"}}
        ]));
        let name = |t: &str| select_profile(&s, ts(t)).map(|p| p.name.clone()).unwrap();
        assert_eq!(name("2026-11-22T10:59:59Z"), "sunday"); // Sunday 2026-11-22, after 09:00Z
        assert_eq!(name("2026-11-22T11:00:00Z"), "launch"); // 20:00 in Tokyo
        assert_eq!(name("2026-11-22T12:00:00Z"), "sunday");
        // Only a default: it applies.
        let s = setting(cpu_profile(1, 3));
        assert_eq!(
            select_profile(&s, ts(NOW)).map(|p| p.name.as_str()),
            Some("default")
        );
        // Only a fixed date outside its window: nothing applies, nothing changes.
        let s = setting(
            json!([{"name": "launch", "capacity": {"minimum": "8", "maximum": "8", "default": "8"}, "rules": [],
             "fixedDate": {"start": "2026-01-01T00:00:00Z", "end": "2026-01-02T00:00:00Z"}}]),
        );
        let d = evaluate(&s, &Fake::default(), 2, LastAction::default(), ts(NOW));
        assert_eq!((d.profile, d.new_capacity), (None, None));
    }
}
