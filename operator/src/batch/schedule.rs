//! Cron schedules as the CronJob controller reads them (robfig/cron's standard parser: five
//! fields, names for months and weekdays, `*`/`?`, lists, ranges, steps and the @-macros), and
//! when a schedule fires next in a time zone. Pure: the reconcile uses it to refuse a schedule
//! the CronJob API would refuse, and for `status.nextRunTime`.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed schedule: the set of values each field matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// The day-of-month or day-of-week field was `*` or `?`: both must match (else either).
    day_star: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ScheduleError(String);

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field { name: "minute", min: 0, max: 59, names: &[] };
const HOUR: Field = Field { name: "hour", min: 0, max: 23, names: &[] };
const DAY: Field = Field { name: "day of month", min: 1, max: 31, names: &[] };
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
const WEEKDAY: Field =
    Field { name: "day of week", min: 0, max: 6, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

impl Field {
    fn value(&self, s: &str) -> Result<u32, ScheduleError> {
        let lower = s.to_ascii_lowercase();
        let v = match self.names.iter().position(|n| *n == lower) {
            Some(i) => i as u32 + self.min,
            None => s
                .parse::<u32>()
                .map_err(|_| ScheduleError(format!("{}: {s:?} is not a number or a name", self.name)))?,
        };
        if !(self.min..=self.max).contains(&v) {
            return Err(ScheduleError(format!("{}: {v} is outside {}-{}", self.name, self.min, self.max)));
        }
        Ok(v)
    }

    /// The bits a field matches, and whether it starts with `*` or `?`.
    fn parse(&self, text: &str) -> Result<(u64, bool), ScheduleError> {
        let mut bits = 0u64;
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => {
                    let step =
                        s.parse::<u32>().ok().filter(|&s| s > 0).ok_or_else(|| {
                            ScheduleError(format!("{}: step {s:?} must be a positive number", self.name))
                        })?;
                    (r, Some(step))
                }
                None => (part, None),
            };
            let (lo, hi) = match range {
                "*" | "?" => (self.min, self.max),
                _ => match range.split_once('-') {
                    Some((a, b)) => (self.value(a)?, self.value(b)?),
                    // `N/step` is N to the maximum, by step.
                    None if step.is_some() => (self.value(range)?, self.max),
                    None => {
                        let v = self.value(range)?;
                        (v, v)
                    }
                },
            };
            if lo > hi {
                return Err(ScheduleError(format!("{}: range {lo}-{hi} runs backwards", self.name)));
            }
            for v in (lo..=hi).step_by(step.unwrap_or(1) as usize) {
                bits |= 1 << v;
            }
        }
        Ok((bits, text.starts_with('*') || text.starts_with('?')))
    }
}

impl std::str::FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => return Err(ScheduleError(format!("unknown schedule macro {other:?}"))),
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields[..] else {
            return Err(ScheduleError(format!(
                "expected five fields (minute hour day-of-month month day-of-week), got {}",
                fields.len()
            )));
        };
        let (days, day_field_star) = DAY.parse(day)?;
        let (weekdays, weekday_star) = WEEKDAY.parse(weekday)?;
        Ok(Self {
            minutes: MINUTE.parse(minute)?.0,
            hours: HOUR.parse(hour)?.0,
            days,
            months: MONTH.parse(month)?.0,
            weekdays,
            day_star: day_field_star || weekday_star,
        })
    }
}

/// A time zone by its IANA name (the CronJob's `timeZone`), or UTC.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, ScheduleError> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|_| ScheduleError(format!("unknown time zone {n:?}"))),
    }
}

impl Schedule {
    fn has(bits: u64, v: i8) -> bool {
        bits & (1 << v) != 0
    }

    fn day_matches(&self, t: DateTime) -> bool {
        let dom = Self::has(self.days, t.day());
        let dow = Self::has(self.weekdays, t.weekday().to_sunday_zero_offset());
        if self.day_star { dom && dow } else { dom || dow }
    }

    /// The first time after `after` (to the minute) that the schedule fires in `tz`; `None`
    /// if it never does within five years (`0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        let limit = start.year() + 5;
        let mut t = start.date().at(start.hour(), start.minute(), 0, 0).checked_add(1.minute()).ok()?;
        while t.year() <= limit {
            t = if !Self::has(self.months, t.month()) {
                t.date().first_of_month().checked_add(1.month()).ok()?.at(0, 0, 0, 0)
            } else if !self.day_matches(t) {
                t.date().tomorrow().ok()?.at(0, 0, 0, 0)
            } else if !Self::has(self.hours, t.hour()) {
                t.date().at(t.hour(), 0, 0, 0).checked_add(1.hour()).ok()?
            } else if !Self::has(self.minutes, t.minute()) {
                t.checked_add(1.minute()).ok()?
            } else {
                let fired = t.to_zoned(tz.clone()).ok()?.timestamp();
                // A time a DST change skips resolves later; a repeated hour fires once.
                if fired > after {
                    return Some(fired);
                }
                t.checked_add(1.minute()).ok()?
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn next(schedule: &str, after: &str, tz: &str) -> String {
        let s: Schedule = schedule.parse().unwrap();
        let tz = time_zone(Some(tz)).unwrap();
        let t = s.next_after(after.parse().unwrap(), &tz).map(|t| t.to_zoned(tz.clone()).datetime().to_string());
        t.unwrap_or_else(|| "never".into())
    }

    #[test]
    fn next_run_times_follow_cron_semantics() {
        let at = "2026-12-06T17:45:30Z";
        for (schedule, want) in [
            ("0 3 * * *", "2026-12-07T03:00:00"),
            ("*/15 * * * *", "2026-12-06T18:00:00"),
            ("46 17 * * *", "2026-12-06T17:46:00"),
            // Strictly after: the minute `after` falls in does not count.
            ("45 17 * * *", "2026-12-07T17:45:00"),
            ("@hourly", "2026-12-06T18:00:00"),
            ("@daily", "2026-12-07T00:00:00"),
            ("@weekly", "2026-12-13T00:00:00"),
            ("@monthly", "2027-01-01T00:00:00"),
            ("@yearly", "2027-01-01T00:00:00"),
            ("0 9 * * MON-FRI", "2026-12-07T09:00:00"),
            ("0 9 * * sat,sun", "2026-12-12T09:00:00"),
            ("30 2 1-7/3 FEB *", "2027-02-01T02:30:00"),
            ("5/20 * * * *", "2026-12-06T18:05:00"),
            // Day of month and day of week both restricted: either matches (the 13th, or a Friday).
            ("0 0 13 * 5", "2026-12-11T00:00:00"),
            // One of them `*` or `?`: both must.
            ("0 0 ? * 5", "2026-12-11T00:00:00"),
            ("0 0 29 2 *", "2028-02-29T00:00:00"),
            ("0 0 30 2 *", "never"),
        ] {
            assert_eq!(next(schedule, at, "UTC"), want, "{schedule}");
        }
    }

    #[test]
    fn time_zones_and_daylight_saving_changes() {
        // 03:00 in Berlin is 02:00 UTC in winter.
        assert_eq!(next("0 3 * * *", "2026-12-06T17:45:00Z", "Europe/Berlin"), "2026-12-07T03:00:00");
        let s: Schedule = "0 3 * * *".parse().unwrap();
        let t = s.next_after("2026-12-06T17:45:00Z".parse().unwrap(), &time_zone(Some("Europe/Berlin")).unwrap());
        assert_eq!(t.unwrap().to_string(), "2026-12-07T02:00:00Z");
        // 02:30 does not exist in Berlin on 2027-03-28: the run moves to 03:30 that day.
        assert_eq!(next("30 2 * * *", "2027-03-27T12:00:00Z", "Europe/Berlin"), "2027-03-28T03:30:00");
        // 02:30 happens twice on 2027-10-31: it fires once, then the next day.
        assert_eq!(next("30 2 * * *", "2027-10-30T12:00:00Z", "Europe/Berlin"), "2027-10-31T02:30:00");
        assert_eq!(next("30 2 * * *", "2027-10-31T00:31:00Z", "Europe/Berlin"), "2027-11-01T02:30:00");
        assert!(time_zone(Some("Europe/Nowhere")).unwrap_err().to_string().contains("unknown time zone"));
    }

    #[test]
    fn schedules_the_cron_job_api_refuses_are_refused_with_the_field() {
        for (schedule, want) in [
            ("61 * * * *", "minute: 61 is outside 0-59"),
            ("0 24 * * *", "hour: 24 is outside 0-23"),
            ("0 0 0 * *", "day of month: 0 is outside 1-31"),
            ("0 0 * 13 *", "month: 13 is outside 1-12"),
            ("0 0 * * 7", "day of week: 7 is outside 0-6"),
            ("0 0 * * mon-sun", "day of week: range 1-0 runs backwards"),
            ("*/0 * * * *", "minute: step \"0\" must be a positive number"),
            ("x * * * *", "minute: \"x\" is not a number or a name"),
            ("* * * *", "expected five fields"),
            ("@every 5m", "unknown schedule macro"),
        ] {
            let e = schedule.parse::<Schedule>().unwrap_err().to_string();
            assert!(e.contains(want), "{schedule}: {e}");
        }
    }
}
