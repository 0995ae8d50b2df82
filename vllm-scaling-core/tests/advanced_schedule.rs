//! Scheduled bounds: the right minute, in the right zone, across DST changes, past
//! midnight, and through the engine's bounds step.

use proptest::prelude::*;
use vllm_scaling_core::{
    Bounds, CurrentScale, Decision, Engine, LimitedBy, PodMetrics, ResolvedPolicy, ResolvedSchedule, ScalingMetrics,
    Timestamp, parse_policy,
};

fn policy(yaml: &str) -> ResolvedPolicy {
    parse_policy(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")).1
}

fn with_schedules(schedules: &str) -> ResolvedPolicy {
    policy(&format!(
        "minReplicas: 1\nmaxReplicas: 20\nscalingRules: [{{metric: queue_length, threshold: 10}}]\n\
         behavior: {{scaleDown: {{stabilizationWindowSeconds: 0}}}}\nschedules:\n{schedules}"
    ))
}

fn schedule(zone: &str, days: &str, start: &str, end: &str) -> ResolvedSchedule {
    let p =
        with_schedules(&format!("  - {{timeZone: '{zone}', {days} start: '{start}', end: '{end}', minReplicas: 5}}\n"));
    p.advanced.schedules[0].clone()
}

/// Whether the schedule is open at these Unix seconds.
fn open(s: &ResolvedSchedule, unix_secs: u64) -> bool {
    s.is_active(Timestamp::from_secs(unix_secs))
}

fn idle(current: i32) -> ScalingMetrics {
    ScalingMetrics {
        pods: (0..current).map(|i| PodMetrics::running(format!("p{i}")).with("queue_length", 0.0)).collect(),
        ..Default::default()
    }
}

fn eval(p: &ResolvedPolicy, unix_secs: u64, current: i32) -> Decision {
    Engine::new(p.clone()).evaluate(Timestamp::from_secs(unix_secs), CurrentScale::new(current), &idle(current))
}

// Instants (Unix seconds) used below, each checked against its UTC calendar time.
const FRI_2026_03_27_0659_59_UTC: u64 = 1_774_594_799;
const FRI_2026_03_27_0700_UTC: u64 = 1_774_594_800;
const SAT_2026_03_28_0700_UTC: u64 = 1_774_681_200;
const MON_2026_03_30_0559_59_UTC: u64 = 1_774_850_399;
const MON_2026_03_30_0600_UTC: u64 = 1_774_850_400;
const MON_2026_03_30_1759_59_UTC: u64 = 1_774_893_599;
const MON_2026_03_30_1800_UTC: u64 = 1_774_893_600;

#[test]
fn berlin_business_hours_switch_at_the_right_minute_before_and_after_dst() {
    let s = schedule("Europe/Berlin", "days: [Mon, Tue, Wed, Thu, Fri],", "08:00", "20:00");
    // Winter (CET, UTC+1): 08:00 local is 07:00 UTC.
    assert!(!open(&s, FRI_2026_03_27_0659_59_UTC));
    assert!(open(&s, FRI_2026_03_27_0700_UTC));
    // Saturday is not listed.
    assert!(!open(&s, SAT_2026_03_28_0700_UTC));
    // Clocks went forward on Sunday 29 March: from Monday (CEST, UTC+2) 08:00 local is
    // 06:00 UTC and 20:00 local is 18:00 UTC.
    assert!(!open(&s, MON_2026_03_30_0559_59_UTC));
    assert!(open(&s, MON_2026_03_30_0600_UTC));
    assert!(open(&s, MON_2026_03_30_1759_59_UTC));
    assert!(!open(&s, MON_2026_03_30_1800_UTC));
}

#[test]
fn new_york_fall_back_repeats_the_hour_and_spring_forward_skips_it() {
    let s = schedule("America/New_York", "", "01:00", "02:00");
    // 1 November 2026: 01:00 EDT (05:00 UTC), then 01:00 EST again (06:00 UTC).
    assert!(open(&s, 1_793_509_200)); // 05:00 UTC = 01:00 EDT
    assert!(open(&s, 1_793_512_800)); // 06:00 UTC = 01:00 EST, the repeated hour
    assert!(!open(&s, 1_793_516_400)); // 07:00 UTC = 02:00 EST
    // 8 March 2026: 02:00 EST jumps to 03:00 EDT, so a 02:00-03:00 window never opens
    // that day (local day: 05:00 UTC on the 8th to 04:00 UTC on the 9th), though it
    // does the day before.
    let skipped = schedule("America/New_York", "", "02:00", "03:00");
    let day_start = 1_772_946_000; // 2026-03-08T05:00:00Z = 00:00 EST
    let opened: Vec<u64> = (0..23 * 60).map(|m| day_start + 60 * m).filter(|&t| open(&skipped, t)).collect();
    assert!(opened.is_empty(), "open at {opened:?}");
    assert!(open(&skipped, 1_772_868_600)); // 2026-03-07T07:30:00Z = 02:30 EST
}

#[test]
fn a_window_past_midnight_belongs_to_its_start_day() {
    let s = schedule("UTC", "days: [Fri],", "22:00", "06:00");
    assert!(open(&s, 1_767_394_800)); // Fri 2026-01-02 23:00
    assert!(open(&s, 1_767_419_940)); // Sat 05:59
    assert!(!open(&s, 1_767_420_000)); // Sat 06:00
    assert!(!open(&s, 1_767_481_200)); // Sat 23:00: Saturday is not listed
    assert!(!open(&s, 1_767_391_140)); // Fri 21:59
    assert!(!open(&s, 1_767_315_600)); // Fri 01:00: Thursday is not listed
}

#[test]
fn fixed_offsets_and_end_of_day() {
    // 09:00 at +05:30 is 03:30 UTC.
    let s = schedule("+05:30", "", "09:00", "17:00");
    assert!(!open(&s, 1_767_324_599)); // 2026-01-02T03:29:59Z
    assert!(open(&s, 1_767_324_600)); // 2026-01-02T03:30:00Z
    let until_midnight = schedule("-08:00", "", "18:00", "24:00");
    // 18:00 at -08:00 is 02:00 UTC the next day; 23:59:59 local is 07:59:59 UTC.
    assert!(open(&until_midnight, 1_767_405_600)); // 2026-01-03T02:00:00Z
    assert!(open(&until_midnight, 1_767_427_199)); // 2026-01-03T07:59:59Z
    assert!(!open(&until_midnight, 1_767_427_200)); // 08:00Z = 00:00 local
}

#[test]
fn the_engine_applies_the_scheduled_bounds() {
    let p = with_schedules(
        "  - {name: day, timeZone: Europe/Berlin, days: [Mon, Tue, Wed, Thu, Fri], start: '08:00', end: '20:00', minReplicas: 5}\n\
         \x20 - {name: night-cap, timeZone: Europe/Berlin, start: '20:00', end: '08:00', maxReplicas: 3}\n",
    );
    // One second before 08:00 local: the night cap holds 6 replicas down to 3, at once
    // (like the HPA's jump into [min, max]).
    let d = eval(&p, FRI_2026_03_27_0659_59_UTC, 6);
    assert_eq!((d.desired_replicas, d.limited_by), (3, LimitedBy::ScheduledMaxReplicas), "{}", d.explanation);
    assert_eq!(d.active_schedule.as_deref(), Some("night-cap"));
    // At 08:00 the day minimum applies: 2 idle replicas go up to 5.
    let d = eval(&p, FRI_2026_03_27_0700_UTC, 2);
    assert_eq!((d.desired_replicas, d.limited_by), (5, LimitedBy::ScheduledMinReplicas), "{}", d.explanation);
    assert_eq!(d.active_schedule.as_deref(), Some("day"));
    assert!(d.explanation.contains("schedule `day` active"), "{}", d.explanation);
    // Idle at 8 replicas in the day: the proposal (0) is clamped to the scheduled 5.
    let d = eval(&p, FRI_2026_03_27_0700_UTC, 8);
    assert_eq!((d.desired_replicas, d.limited_by), (5, LimitedBy::ScheduledMinReplicas), "{}", d.explanation);
    // Saturday at 08:00: no day schedule, and the night cap is over: spec bounds.
    let d = eval(&p, SAT_2026_03_28_0700_UTC, 2);
    assert_eq!((d.desired_replicas, d.limited_by, d.active_schedule), (1, LimitedBy::MinReplicas, None));
}

#[test]
fn the_first_active_schedule_wins() {
    let p = with_schedules(
        "  - {name: a, timeZone: UTC, start: '00:00', end: '12:00', minReplicas: 4}\n\
         \x20 - {name: b, timeZone: UTC, start: '06:00', end: '18:00', minReplicas: 8}\n",
    );
    let b = |secs| Bounds::at(&p.advanced.schedules, p.min_replicas, p.max_replicas, Timestamp::from_secs(secs));
    assert_eq!(b(7 * 3600).schedule.as_deref(), Some("a"));
    assert_eq!(b(7 * 3600).min_replicas, 4);
    assert_eq!(b(13 * 3600).min_replicas, 8);
    assert_eq!((b(19 * 3600).min_replicas, b(19 * 3600).schedule), (1, None));
    assert_eq!(b(19 * 3600).max_replicas, 20);
}

/// Monday = 0; 1970-01-01 was a Thursday.
fn weekday_of(local_secs: i64) -> usize {
    ((local_secs.div_euclid(86_400) + 3).rem_euclid(7)) as usize
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// With a fixed offset, the schedule agrees with plain calendar arithmetic for any
    /// instant, window (including past midnight) and set of days.
    #[test]
    fn fixed_offset_windows_match_calendar_arithmetic(
        offset_min in -18 * 60..=18 * 60i32,
        start in 0..1440u32,
        len in 1..1439u32,
        days in prop::collection::vec(any::<bool>(), 7),
        at in 0..4_000_000_000u64,
    ) {
        prop_assume!(days.iter().any(|&d| d));
        let end = (start + len) % 1440;
        let (sign, abs) = if offset_min < 0 { ('-', -offset_min) } else { ('+', offset_min) };
        let zone = format!("{sign}{:02}:{:02}", abs / 60, abs % 60);
        const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        let listed: Vec<&str> = (0..7).filter(|&i| days[i]).map(|i| NAMES[i]).collect();
        let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        let s = schedule(&zone, &format!("days: [{}],", listed.join(", ")), &hhmm(start), &hhmm(end));

        let local = at as i64 + i64::from(offset_min) * 60;
        let (day, secs) = (weekday_of(local), local.rem_euclid(86_400) as u32);
        let (start_s, end_s) = (start * 60, end * 60);
        let expected = if start_s < end_s {
            days[day] && secs >= start_s && secs < end_s
        } else {
            (days[day] && secs >= start_s) || (days[(day + 6) % 7] && secs < end_s)
        };
        prop_assert_eq!(open(&s, at), expected, "zone {} window {}-{} at {}", zone, hhmm(start), hhmm(end), at);
    }
}
