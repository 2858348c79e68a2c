//! The store itself: samples from agents (per instance) and custom
//! metrics pushed over HTTP (per set or per instance), kept with bounded retention and
//! read back as autoscale windows ([`MetricWindows`]), Azure Monitor query answers and
//! Prometheus text.
//!
//! Each series (scale set, namespace, metric, instance, dimensions) keeps one-second
//! buckets for up to [`RAW_SECS`] and one-minute buckets for up to [`MINUTE_BUCKETS`]
//! minutes: older second buckets are folded into their minute as they age out. The
//! whole store shares a budget ([`RAW_BUDGET`], [`MINUTE_BUDGET`] buckets), so with many
//! series each keeps less history (never under two minutes of seconds and an hour of
//! minutes). At most [`MAX_SERIES`] series are kept; when a new one would exceed that,
//! the series updated longest ago is dropped. Everything dropped is counted
//! (`dropped_points`, `dropped_series`), so a flood of custom metrics costs bounded
//! memory (about 100 MB at worst) and is visible on `/metrics`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use jiff::{Timestamp, ToSpan};
use shoal_model::autoscale::{DimensionOperator, MetricKey};
use shoal_model::ids::VmssRef;

use crate::window::{Grain, MetricWindows, WindowQuery};

/// Seconds of one-second buckets kept per series, at most (ten minutes).
pub const RAW_SECS: usize = 600;
/// One-minute buckets kept per series, at most (a day).
pub const MINUTE_BUCKETS: usize = 1440;
/// One-second buckets of all series together.
pub const RAW_BUDGET: usize = 1_200_000;
/// One-minute buckets of all series together.
pub const MINUTE_BUDGET: usize = 600_000;

/// How many buckets each series keeps when `series` series share the budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Caps {
    raw: usize,
    minutes: usize,
}

impl Caps {
    fn for_series(series: usize) -> Caps {
        let n = series.max(1);
        Caps {
            raw: (RAW_BUDGET / n).clamp(120, RAW_SECS),
            minutes: (MINUTE_BUDGET / n).clamp(60, MINUTE_BUCKETS),
        }
    }
}
/// Series kept at most.
pub const MAX_SERIES: usize = 10_000;

/// Sum, count, min, max and last of the samples in one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    pub sum: f64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub last: f64,
}

impl Agg {
    fn one(v: f64) -> Self {
        Agg {
            sum: v,
            count: 1,
            min: v,
            max: v,
            last: v,
        }
    }

    /// A pre-aggregated sample (Azure's custom-metric `series` entries).
    pub fn of(sum: f64, count: u64, min: f64, max: f64) -> Self {
        Agg {
            sum,
            count: count.max(1),
            min,
            max,
            last: sum / count.max(1) as f64,
        }
    }

    fn merge(&mut self, o: &Agg) {
        self.sum += o.sum;
        self.count = self.count.saturating_add(o.count);
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.last = o.last;
    }

    pub fn average(&self) -> f64 {
        self.sum / self.count.max(1) as f64
    }
}

/// What identifies a series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// `sub/rg/name`, lower-cased.
    pub resource: String,
    /// Lower-cased; `None` for platform metrics.
    pub namespace: Option<String>,
    /// Lower-cased metric name.
    pub name: String,
    /// The instance id, or `None` for a value about the whole set.
    pub instance: Option<String>,
    /// Dimension name (lower-cased) → value.
    pub dimensions: BTreeMap<String, String>,
}

fn resource_key(r: &VmssRef) -> String {
    format!(
        "{}/{}/{}",
        r.subscription.to_ascii_lowercase(),
        r.resource_group.to_ascii_lowercase(),
        r.name.to_ascii_lowercase()
    )
}

impl SeriesKey {
    pub fn new(
        resource: &VmssRef,
        namespace: Option<&str>,
        name: &str,
        instance: Option<&str>,
        dimensions: BTreeMap<String, String>,
    ) -> Self {
        let namespace = namespace
            .filter(|n| !shoal_model::autoscale::is_platform_namespace(Some(n)))
            .map(str::to_ascii_lowercase);
        SeriesKey {
            resource: resource_key(resource),
            namespace,
            name: name.to_ascii_lowercase(),
            instance: instance.map(str::to_string),
            dimensions: dimensions
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        }
    }

    fn matches(&self, m: &MetricKey) -> bool {
        self.resource == resource_key(&m.resource)
            && self.name.eq_ignore_ascii_case(&m.name)
            && self.namespace.as_deref()
                == m.namespace
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .as_deref()
    }

    fn passes(&self, filters: &[(String, DimensionOperator, Vec<String>)]) -> bool {
        filters.iter().all(|(name, op, values)| {
            let lname = name.to_ascii_lowercase();
            // `VMName` is the instance on Azure's scale-set metrics.
            let actual = if lname == "vmname" || lname == "instance" {
                self.instance.clone()
            } else {
                self.dimensions.get(&lname).cloned()
            };
            let any = values.iter().any(|v| v == "*");
            let hit = any
                || actual
                    .as_deref()
                    .is_some_and(|a| values.iter().any(|v| v.eq_ignore_ascii_case(a)));
            match op {
                DimensionOperator::Equals => hit,
                DimensionOperator::NotEquals => !hit,
            }
        })
    }
}

#[derive(Debug, Default)]
struct Series {
    /// (unix second, agg), oldest first.
    raw: VecDeque<(i64, Agg)>,
    /// (unix minute start second, agg), oldest first.
    minutes: VecDeque<(i64, Agg)>,
    updated: i64,
}

impl Series {
    fn add(&mut self, sec: i64, agg: Agg, caps: Caps, dropped: &mut u64) {
        self.updated = self.updated.max(sec);
        // Samples older than what the raw buckets hold go straight to their minute.
        let raw_floor = self
            .raw
            .back()
            .map_or(i64::MIN, |(s, _)| *s - caps.raw as i64);
        if sec <= raw_floor {
            self.add_minute(sec - sec.rem_euclid(60), agg, caps, dropped);
            return;
        }
        match self.raw.iter().rposition(|(s, _)| *s <= sec) {
            Some(i) if self.raw[i].0 == sec => self.raw[i].1.merge(&agg),
            Some(i) => self.raw.insert(i + 1, (sec, agg)),
            None => self.raw.push_front((sec, agg)),
        }
        let newest = self.raw.back().map_or(sec, |(s, _)| *s);
        while let Some((s, a)) = self.raw.front().copied() {
            if s > newest - caps.raw as i64 {
                break;
            }
            self.raw.pop_front();
            self.add_minute(s - s.rem_euclid(60), a, caps, dropped);
        }
    }

    fn add_minute(&mut self, minute: i64, agg: Agg, caps: Caps, dropped: &mut u64) {
        match self.minutes.iter().rposition(|(m, _)| *m <= minute) {
            Some(i) if self.minutes[i].0 == minute => self.minutes[i].1.merge(&agg),
            Some(i) => self.minutes.insert(i + 1, (minute, agg)),
            None if self.minutes.len() >= caps.minutes => {
                *dropped = dropped.saturating_add(agg.count);
                return;
            }
            None => self.minutes.push_front((minute, agg)),
        }
        while self.minutes.len() > caps.minutes {
            if let Some((_, a)) = self.minutes.pop_front() {
                *dropped = dropped.saturating_add(a.count);
            }
        }
    }

    fn points(&self) -> u64 {
        self.raw
            .iter()
            .chain(&self.minutes)
            .map(|(_, a)| a.count)
            .fold(0u64, u64::saturating_add)
    }

    /// Buckets overlapping `[from, to)`: raw seconds where they cover, minutes before.
    fn range(&self, from: i64, to: i64) -> Vec<(i64, Agg)> {
        let raw_start = self.raw.front().map_or(i64::MAX, |(s, _)| *s);
        let mut out: Vec<(i64, Agg)> = self
            .minutes
            .iter()
            .filter(|(m, _)| *m + 60 > from && *m < to && *m < raw_start)
            .copied()
            .collect();
        out.extend(
            self.raw
                .iter()
                .filter(|(s, _)| *s >= from && *s < to)
                .copied(),
        );
        out
    }
}

/// Counters shown on `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsStats {
    pub series: usize,
    pub accepted: u64,
    pub dropped_points: u64,
    pub dropped_series: u64,
}

#[derive(Debug, Default)]
struct Inner {
    series: HashMap<SeriesKey, Series>,
    stats: MetricsStats,
}

/// The store. Cheap to share behind an `Arc`; one lock, held briefly.
#[derive(Debug, Default)]
pub struct MetricsStore {
    inner: Mutex<Inner>,
    max_series: Option<usize>,
}

/// One bucket of an aggregate query: its start and, per series, the bucket's aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub start: Timestamp,
    pub per_series: Vec<(SeriesKey, Agg)>,
}

impl MetricsStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store keeping at most `max_series` series (tests).
    pub fn with_max_series(max_series: usize) -> Self {
        MetricsStore {
            inner: Mutex::default(),
            max_series: Some(max_series),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one sample (or a pre-aggregated one) at `at`.
    pub fn record(&self, key: SeriesKey, at: Timestamp, agg: Agg) {
        let sec = at.as_second();
        let max = self.max_series.unwrap_or(MAX_SERIES);
        let mut inner = self.lock();
        let inner = &mut *inner;
        if !inner.series.contains_key(&key) && inner.series.len() >= max {
            let oldest = inner
                .series
                .iter()
                .min_by_key(|(_, s)| s.updated)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                if let Some(s) = inner.series.remove(&k) {
                    inner.stats.dropped_points =
                        inner.stats.dropped_points.saturating_add(s.points());
                    inner.stats.dropped_series += 1;
                }
            }
        }
        inner.stats.accepted = inner.stats.accepted.saturating_add(agg.count);
        let mut dropped = 0;
        let caps = Caps::for_series(inner.series.len() + 1);
        inner
            .series
            .entry(key)
            .or_default()
            .add(sec, agg, caps, &mut dropped);
        inner.stats.dropped_points = inner.stats.dropped_points.saturating_add(dropped);
        inner.stats.series = inner.series.len();
    }

    pub fn record_value(&self, key: SeriesKey, at: Timestamp, value: f64) {
        self.record(key, at, Agg::one(value));
    }

    pub fn stats(&self) -> MetricsStats {
        let inner = self.lock();
        MetricsStats {
            series: inner.series.len(),
            ..inner.stats
        }
    }

    /// Drops every series of a scale set (it was deleted).
    pub fn forget(&self, resource: &VmssRef) {
        let rk = resource_key(resource);
        let mut inner = self.lock();
        inner.series.retain(|k, _| k.resource != rk);
        inner.stats.series = inner.series.len();
    }

    /// Buckets of `interval_secs` from `from` to `to` (exclusive) of every series of
    /// `metric` that passes `filters`; empty buckets left out.
    pub fn query(
        &self,
        metric: &MetricKey,
        filters: &[(String, DimensionOperator, Vec<String>)],
        from: Timestamp,
        to: Timestamp,
        interval_secs: u64,
    ) -> Vec<Bucket> {
        let (from_s, to_s) = (from.as_second(), to.as_second());
        let step = interval_secs.max(1) as i64;
        let inner = self.lock();
        let mut buckets: BTreeMap<i64, BTreeMap<SeriesKey, Agg>> = BTreeMap::new();
        for (key, series) in &inner.series {
            if !key.matches(metric) || !key.passes(filters) {
                continue;
            }
            for (s, agg) in series.range(from_s, to_s) {
                let idx = (s.max(from_s) - from_s) / step;
                let slot = buckets.entry(idx).or_default();
                match slot.get_mut(key) {
                    Some(a) => a.merge(&agg),
                    None => {
                        slot.insert(key.clone(), agg);
                    }
                }
            }
        }
        buckets
            .into_iter()
            .filter_map(|(idx, per)| {
                let start = from.checked_add((idx * step).seconds()).ok()?;
                Some(Bucket {
                    start,
                    per_series: per.into_iter().collect(),
                })
            })
            .collect()
    }

    /// The latest value of every series (for Prometheus text).
    pub fn latest(&self) -> Vec<(SeriesKey, f64, Timestamp)> {
        let inner = self.lock();
        let mut out: Vec<_> = inner
            .series
            .iter()
            .filter_map(|(k, s)| {
                let (sec, a) = s.raw.back().or(s.minutes.back())?;
                Some((k.clone(), a.last, Timestamp::from_second(*sec).ok()?))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

impl MetricWindows for MetricsStore {
    /// Grains of the window `(now − window, now]`; each instance's value in a grain is the
    /// average of its samples there (a set-level series counts as one instance).
    fn window(&self, q: &WindowQuery<'_>) -> Vec<Grain> {
        let to = q.now.checked_add(1.second()).unwrap_or(q.now);
        let from = to
            .checked_sub((q.window_secs as i64).seconds())
            .unwrap_or(to);
        self.query(q.metric, q.dimensions, from, to, q.grain_secs)
            .into_iter()
            .map(|b| {
                // Series that differ only by dimensions are one instance's parts.
                let mut per_instance: BTreeMap<Option<String>, Agg> = BTreeMap::new();
                for (k, a) in b.per_series {
                    match per_instance.get_mut(&k.instance) {
                        Some(x) => x.merge(&a),
                        None => {
                            per_instance.insert(k.instance, a);
                        }
                    }
                }
                Grain {
                    start: b.start,
                    per_instance: per_instance.values().map(Agg::average).collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set() -> VmssRef {
        VmssRef::new("s", "demo", "web")
    }

    fn cpu() -> MetricKey {
        MetricKey {
            resource: VmssRef::new("S", "Demo", "WEB"),
            namespace: None,
            name: "Percentage CPU".into(),
        }
    }

    fn key(instance: &str) -> SeriesKey {
        SeriesKey::new(
            &set(),
            None,
            "Percentage CPU",
            Some(instance),
            BTreeMap::new(),
        )
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn windows_average_per_instance_per_grain() {
        let m = MetricsStore::new();
        for s in 0..10 {
            m.record_value(key("0"), t(s), 80.0);
            m.record_value(key("1"), t(s), 20.0 + s as f64);
        }
        let q = WindowQuery {
            metric: &cpu(),
            dimensions: &[],
            grain_secs: 5,
            window_secs: 10,
            now: t(9),
        };
        let grains = m.window(&q);
        assert_eq!(grains.len(), 2);
        assert_eq!(grains[0].per_instance, vec![80.0, 22.0]);
        assert_eq!(grains[1].per_instance, vec![80.0, 27.0]);
        // Only the last 3 s.
        let q = WindowQuery {
            window_secs: 3,
            grain_secs: 3,
            ..q
        };
        assert_eq!(m.window(&q)[0].per_instance, vec![80.0, 28.0]);
        // A dimension filter on the instance.
        let f = vec![(
            "VMName".to_string(),
            DimensionOperator::Equals,
            vec!["1".to_string()],
        )];
        let q = WindowQuery {
            dimensions: &f,
            ..q
        };
        assert_eq!(m.window(&q)[0].per_instance, vec![28.0]);
    }

    #[test]
    fn old_seconds_fold_into_minutes() {
        let m = MetricsStore::new();
        for s in 0..120 {
            m.record_value(key("0"), t(s), s as f64);
        }
        // An hour later the raw seconds of the first two minutes are gone but their
        // minutes remain, with the same totals.
        m.record_value(key("0"), t(120 + RAW_SECS as i64), 0.0);
        let buckets = m.query(&cpu(), &[], t(0), t(120), 60);
        let total: f64 = buckets.iter().map(|b| b.per_series[0].1.sum).sum();
        assert_eq!(total, (0..120).sum::<i64>() as f64);
        assert_eq!(m.stats().dropped_points, 0);
    }

    #[test]
    fn a_flood_of_series_is_bounded_and_counted() {
        let m = MetricsStore::with_max_series(100);
        for i in 0..1000 {
            let k = SeriesKey::new(
                &set(),
                Some("shoal/custom"),
                &format!("m{i}"),
                None,
                BTreeMap::new(),
            );
            m.record_value(k, t(i), 1.0);
        }
        let st = m.stats();
        assert_eq!(st.series, 100);
        assert_eq!(st.dropped_series, 900);
        assert_eq!(st.dropped_points, 900);
        assert_eq!(st.accepted, 1000);
    }

    #[test]
    fn many_series_share_the_budget_but_keep_minutes_of_seconds() {
        assert_eq!(
            Caps::for_series(1),
            Caps {
                raw: RAW_SECS,
                minutes: MINUTE_BUCKETS
            }
        );
        let c = Caps::for_series(MAX_SERIES);
        assert!(c.raw >= 120 && c.minutes >= 60);
        // The worst case stays within the budgets (plus the floors).
        assert!(MAX_SERIES * c.raw <= RAW_BUDGET.max(MAX_SERIES * 120));
        assert!(MAX_SERIES * c.minutes <= MINUTE_BUDGET.max(MAX_SERIES * 60));
    }

    proptest! {
        #[test]
        fn memory_stays_bounded_and_no_sample_is_lost_silently(
            samples in prop::collection::vec((0i64..200_000, 0u8..3), 1..400),
        ) {
            let m = MetricsStore::with_max_series(2);
            for (s, inst) in &samples {
                m.record_value(key(&inst.to_string()), t(*s), 1.0);
            }
            let inner = m.lock();
            prop_assert!(inner.series.len() <= 2);
            let kept: u64 = inner.series.values().map(Series::points).sum();
            for s in inner.series.values() {
                prop_assert!(s.raw.len() <= RAW_SECS && s.minutes.len() <= MINUTE_BUCKETS);
            }
            prop_assert_eq!(kept + inner.stats.dropped_points, samples.len() as u64);
        }
    }
}
