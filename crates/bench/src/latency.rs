//! Open-loop latency and closed-loop throughput timing.
//!
//! [`open_loop`] issues call `i` at its *planned* time `start + i / rate` and measures
//! each latency from that planned time to the call's completion, so a stall delays every
//! call behind it and shows up in their latencies (no coordinated omission; this is how
//! exchange-core's latency tests stamp commands). It never sleeps: while a call is not
//! yet due it spins, yielding the thread only when the call is more than
//! [`YIELD_ABOVE`] away, so it cannot oversleep the planned time.
//!
//! [`closed_loop`] runs the calls back to back and reports the rate.
//!
//! All times are `std::time::Instant` in nanoseconds. Rates are integers (calls per
//! second, rounded down).

use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

/// While the next call is further away than this, the waiting loop yields its thread.
pub const YIELD_ABOVE: Duration = Duration::from_micros(50);

/// Latencies above one hour are recorded as one hour.
const MAX_TRACKED_NS: u64 = 3_600_000_000_000;

/// Latencies of an open-loop run, in nanoseconds from each call's planned start to its
/// completion.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LatencyReport {
    pub calls: u64,
    /// Rate asked for, calls per second.
    pub target_rate: u64,
    /// Rate achieved: calls divided by the time from the first planned start to the last
    /// completion.
    pub achieved_rate: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub p9999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: u64,
}

/// Throughput of a closed-loop run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ThroughputReport {
    pub ops_per_sec: u64,
    pub elapsed_ns: u64,
}

/// `n` per `elapsed_ns`, as a per-second rate (rounded down; `u64::MAX` if no time passed).
pub fn rate(n: u64, elapsed_ns: u64) -> u64 {
    if elapsed_ns == 0 {
        return u64::MAX;
    }
    u64::try_from(u128::from(n) * 1_000_000_000 / u128::from(elapsed_ns)).unwrap_or(u64::MAX)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Call `f(i)` for `i` in `0..n`, call `i` at `start + i / rate_per_sec`, and record each
/// call's latency from its planned time to its completion.
pub fn open_loop(n: usize, rate_per_sec: u64, mut f: impl FnMut(usize)) -> LatencyReport {
    assert!(rate_per_sec > 0, "rate must be positive");
    // Fixed bounds: 1 ns to one hour at 3 significant digits. (An auto-resizing histogram
    // clamps `saturating_record` to its current, tiny, upper bound.)
    let mut hist = match Histogram::<u64>::new_with_bounds(1, MAX_TRACKED_NS, 3) {
        Ok(h) => h,
        Err(e) => panic!("histogram: {e}"),
    };
    let start = Instant::now();
    let mut last_done = start;
    for i in 0..n {
        let offset =
            u128::try_from(i).unwrap_or(u128::MAX) * 1_000_000_000 / u128::from(rate_per_sec);
        let planned = start + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX));
        loop {
            let now = Instant::now();
            if now >= planned {
                break;
            }
            if planned - now > YIELD_ABOVE {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        f(i);
        let done = Instant::now();
        hist.saturating_record(nanos(done.saturating_duration_since(planned)).max(1));
        last_done = done;
    }
    let elapsed = nanos(last_done - start);
    LatencyReport {
        calls: n as u64,
        target_rate: rate_per_sec,
        achieved_rate: rate(n as u64, elapsed),
        p50_ns: hist.value_at_quantile(0.5),
        p90_ns: hist.value_at_quantile(0.9),
        p99_ns: hist.value_at_quantile(0.99),
        p999_ns: hist.value_at_quantile(0.999),
        p9999_ns: hist.value_at_quantile(0.9999),
        max_ns: hist.max(),
        mean_ns: hist.mean() as u64,
    }
}

/// Call `f(i)` for `i` in `0..n` back to back; report the rate.
pub fn closed_loop(n: usize, mut f: impl FnMut(usize)) -> ThroughputReport {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    let elapsed_ns = nanos(start.elapsed());
    ThroughputReport {
        ops_per_sec: rate(n as u64, elapsed_ns),
        elapsed_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_keeps_the_schedule() {
        // 20,000 calls at 200k/s take about 100 ms.
        let mut calls = 0usize;
        let r = open_loop(20_000, 200_000, |_| calls += 1);
        assert_eq!(calls, 20_000);
        assert_eq!(r.calls, 20_000);
        assert!(
            r.achieved_rate > 150_000 && r.achieved_rate < 210_000,
            "{r:?}"
        );
        assert!(r.p50_ns <= r.p99_ns && r.p99_ns <= r.p999_ns && r.p999_ns <= r.max_ns);
    }

    #[test]
    fn open_loop_counts_stalls_against_later_calls() {
        // One 5 ms stall at a 100k/s schedule delays the ~500 calls planned during it.
        let r = open_loop(2_000, 100_000, |i| {
            if i == 100 {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        assert!(r.max_ns >= 5_000_000, "{r:?}");
        assert!(r.p90_ns >= 500_000, "stall must show in later calls: {r:?}");
    }

    #[test]
    fn closed_loop_reports_a_rate() {
        let mut x = 0u64;
        let r = closed_loop(100_000, |i| x = x.wrapping_add(i as u64));
        assert!(r.ops_per_sec > 0 && r.elapsed_ns > 0, "{r:?}");
        assert!(x > 0);
    }
}
