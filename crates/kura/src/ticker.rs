//! A background thread that takes one step per period until it is stopped: what the
//! server's schedules (solvency epochs, audit checkpoints) run on.

use anyhow::{Context, Result};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The running thread; [`Ticker::stop`] ends it.
#[derive(Debug)]
pub struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: JoinHandle<()>,
}

impl Ticker {
    /// Runs `step` every `every` (the first after one period) on a thread named `name`.
    pub fn start(
        name: &str,
        every: Duration,
        mut step: impl FnMut() + Send + 'static,
    ) -> Result<Ticker> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || loop {
                {
                    let (lock, cv) = &*flag;
                    let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                    let (guard, _) = cv
                        .wait_timeout_while(guard, every, |stopped| !*stopped)
                        .unwrap_or_else(|p| p.into_inner());
                    if *guard {
                        return;
                    }
                }
                step();
            })
            .with_context(|| format!("starting the {name} thread"))?;
        Ok(Ticker { stop, thread })
    }

    /// Stops the thread; a step under way is finished first.
    pub fn stop(self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn it_steps_until_stopped_and_never_after() {
        let steps = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&steps);
        let ticker = Ticker::start("test-ticker", Duration::from_millis(1), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .expect("start");
        while steps.load(Ordering::SeqCst) < 3 {
            std::thread::yield_now();
        }
        ticker.stop();
        let at_stop = steps.load(Ordering::SeqCst);
        assert!(at_stop >= 3);
        // Joined: no step can run any more.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(steps.load(Ordering::SeqCst), at_stop);
    }

    #[test]
    fn a_long_period_does_not_delay_stopping() {
        let ticker = Ticker::start("test-ticker", Duration::from_secs(3600), || {}).expect("start");
        let t = std::time::Instant::now();
        ticker.stop();
        assert!(t.elapsed() < Duration::from_secs(60));
    }
}
