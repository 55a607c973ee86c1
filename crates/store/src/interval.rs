//! Kline intervals (Binance's names) and the bucket each timestamp falls in.

use std::fmt;

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;
/// 1970-01-01 was a Thursday; Binance's weeks start on Monday 00:00 UTC.
const WEEK_OFFSET: u64 = 4 * DAY;

/// A kline interval. Every interval is maintained incrementally, one row per bucket.
/// Binance's `1s` is not kept (it would write a row per second of activity).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    M1,
    M3,
    M5,
    M15,
    M30,
    H1,
    H2,
    H4,
    H6,
    H8,
    H12,
    D1,
    D3,
    W1,
    /// One calendar month (UTC).
    Mo1,
}

impl Interval {
    pub const ALL: [Interval; 15] = [
        Interval::M1,
        Interval::M3,
        Interval::M5,
        Interval::M15,
        Interval::M30,
        Interval::H1,
        Interval::H2,
        Interval::H4,
        Interval::H6,
        Interval::H8,
        Interval::H12,
        Interval::D1,
        Interval::D3,
        Interval::W1,
        Interval::Mo1,
    ];

    /// Binance's name: `1m`, `3m`, …, `1w`, `1M`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Interval::M1 => "1m",
            Interval::M3 => "3m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::M30 => "30m",
            Interval::H1 => "1h",
            Interval::H2 => "2h",
            Interval::H4 => "4h",
            Interval::H6 => "6h",
            Interval::H8 => "8h",
            Interval::H12 => "12h",
            Interval::D1 => "1d",
            Interval::D3 => "3d",
            Interval::W1 => "1w",
            Interval::Mo1 => "1M",
        }
    }

    /// Parse Binance's name (case-sensitive: `1m` is a minute, `1M` a month).
    pub fn parse(text: &str) -> Option<Interval> {
        Interval::ALL.into_iter().find(|i| i.as_str() == text)
    }

    /// Length of a fixed interval in milliseconds; `None` for the calendar month.
    pub const fn fixed_ms(self) -> Option<u64> {
        Some(match self {
            Interval::M1 => MINUTE,
            Interval::M3 => 3 * MINUTE,
            Interval::M5 => 5 * MINUTE,
            Interval::M15 => 15 * MINUTE,
            Interval::M30 => 30 * MINUTE,
            Interval::H1 => HOUR,
            Interval::H2 => 2 * HOUR,
            Interval::H4 => 4 * HOUR,
            Interval::H6 => 6 * HOUR,
            Interval::H8 => 8 * HOUR,
            Interval::H12 => 12 * HOUR,
            Interval::D1 => DAY,
            Interval::D3 => 3 * DAY,
            Interval::W1 => 7 * DAY,
            Interval::Mo1 => return None,
        })
    }

    /// Open time (ms since the epoch, UTC) of the bucket containing `time_ms`.
    pub fn open_time(self, time_ms: u64) -> u64 {
        match self {
            Interval::W1 => {
                let week = 7 * DAY;
                if time_ms < WEEK_OFFSET {
                    // Before the first Monday: the week that started on 1969-12-29.
                    0
                } else {
                    (time_ms - WEEK_OFFSET) / week * week + WEEK_OFFSET
                }
            }
            Interval::Mo1 => {
                let days = (time_ms / DAY) as i64;
                let (y, m, _) = civil_from_days(days);
                days_from_civil(y, m, 1) as u64 * DAY
            }
            fixed => {
                let len = fixed.fixed_ms().unwrap_or(MINUTE);
                time_ms / len * len
            }
        }
    }

    /// Close time (inclusive, Binance style: next open time − 1) of the bucket opening
    /// at `open_time_ms`.
    pub fn close_time(self, open_time_ms: u64) -> u64 {
        match self.fixed_ms() {
            Some(len) => open_time_ms + len - 1,
            None => {
                let (y, m, _) = civil_from_days((open_time_ms / DAY) as i64);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(ny, nm, 1) as u64 * DAY - 1
            }
        }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for i in Interval::ALL {
            assert_eq!(Interval::parse(i.as_str()), Some(i));
        }
        assert_eq!(Interval::parse("1s"), None);
    }

    #[test]
    fn buckets() {
        // 2024-02-29T13:47:12.345Z, a Thursday.
        let t = 1_709_214_432_345;
        assert_eq!(Interval::M1.open_time(t), 1_709_214_420_000);
        assert_eq!(Interval::M15.open_time(t), 1_709_214_300_000);
        assert_eq!(Interval::H1.open_time(t), 1_709_211_600_000);
        assert_eq!(Interval::D1.open_time(t), 1_709_164_800_000);
        // Monday 2024-02-26.
        assert_eq!(Interval::W1.open_time(t), 1_708_905_600_000);
        // 2024-02-01 and 2024-03-01.
        assert_eq!(Interval::Mo1.open_time(t), 1_706_745_600_000);
        assert_eq!(
            Interval::Mo1.close_time(1_706_745_600_000),
            1_709_251_200_000 - 1
        );
        assert_eq!(Interval::M1.close_time(0), 59_999);
        for i in Interval::ALL {
            let open = i.open_time(t);
            assert!(open <= t && t <= i.close_time(open), "{i}");
        }
    }
}
