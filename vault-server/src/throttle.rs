//! Slowing down guessing: failed verifies (`MALFORMED`, `NOT_FOUND`) counted per end-user
//! address, in memory.
//!
//! Each address has a fixed one-minute window that starts at its first failure. Once an address
//! has failed [`ServerConfig::verify_failures_per_minute`] times in its window, its further
//! failing verifies are refused (429 `throttled`) until the window ends, which is what
//! `retry-after` says. A fixed window is the simple choice: at a window's edge an address can
//! fail up to twice the threshold in a minute, which still bounds guessing to the same order.
//!
//! IPv6 addresses are counted per /64, the block one subscriber usually holds, since counting
//! single addresses would let one host rotate through 2^64 of them. IPv4-mapped IPv6 addresses
//! count as their IPv4 address.
//!
//! At most [`MAX_ADDRESSES`] are tracked: when full, finished windows are dropped first, then
//! addresses under the threshold. State is lost at restart.
//!
//! A refused verify is not audited one by one (a flood of junk would fill the disk): the
//! refusals of each address are summed per minute, from its first refusal, and [`summarize`]
//! records each sum as one `key.verify.throttled` entry (outcome `THROTTLED`, the address as the
//! client, details `refused`, `from_ms`, `until_ms`) once its minute is over, and every pending
//! sum when the server stops. A crash loses at most the last minute's sums; the refused
//! requests changed nothing.
//!
//! [`ServerConfig::verify_failures_per_minute`]: crate::ServerConfig::verify_failures_per_minute

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vault_core::Context;

use crate::AppState;
use crate::auth::blocking;

/// How often finished refusal sums are written to the audit log.
pub(crate) const SUMMARIZE_EVERY: Duration = Duration::from_secs(5);

/// The window length.
const WINDOW: Duration = Duration::from_secs(60);

/// Most addresses tracked at once.
pub(crate) const MAX_ADDRESSES: usize = 100_000;

/// Failure counts by address.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    /// A std mutex, not a Tokio one: no await is held, and the work under it is a map update.
    windows: Mutex<HashMap<IpAddr, Window>>,
    /// Refusals not yet in the audit log, by address.
    refusals: Mutex<HashMap<IpAddr, Refusals>>,
}

/// The verifies refused from one address in one minute, to be audited as one entry.
#[derive(Debug, Clone)]
pub(crate) struct Refusals {
    /// The address (its bucket) the sum is kept under.
    ip: IpAddr,
    /// The caller of the first refused verify, with the address as its client.
    pub ctx: Context,
    /// Verifies refused.
    pub count: u64,
    /// Unix ms of the first and the last.
    pub from_ms: u64,
    pub until_ms: u64,
    started: Instant,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The address as the audit log names it: IPv4 as is, IPv6 as its /64.
fn address_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

impl Throttle {
    /// Whether `ip` has used up `threshold` failures in its current window: the seconds until
    /// the window ends, or `None`. Counts nothing. A threshold of 0 turns the throttle off.
    pub(crate) fn over(&self, ip: IpAddr, threshold: u32, now: Instant) -> Option<u64> {
        if threshold == 0 {
            return None;
        }
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows.get(&bucket(ip))?;
        let age = now.saturating_duration_since(window.start);
        (age < WINDOW && window.failures >= threshold).then(|| seconds_left(age))
    }

    /// Adds one refused verify from `ip`, made by `ctx`'s caller, to the address's sum.
    pub(crate) fn refused(&self, ip: IpAddr, ctx: &Context, now: Instant) {
        let ip = bucket(ip);
        let ms = now_ms();
        let mut refusals = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        // Full (every address refused within a minute): sum the newcomers under the
        // unspecified address rather than grow without bound.
        let ip = if refusals.len() >= MAX_ADDRESSES && !refusals.contains_key(&ip) {
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        } else {
            ip
        };
        let sum = refusals.entry(ip).or_insert_with(|| Refusals {
            ip,
            ctx: ctx.clone().with_client(address_text(ip)),
            count: 0,
            from_ms: ms,
            until_ms: ms,
            started: now,
        });
        sum.count += 1;
        sum.until_ms = ms;
    }

    /// Takes the sums whose minute is over (every sum if `all`).
    pub(crate) fn due(&self, now: Instant, all: bool) -> Vec<Refusals> {
        let mut refusals = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        let done: Vec<IpAddr> = refusals
            .iter()
            .filter(|(_, r)| all || now.saturating_duration_since(r.started) >= WINDOW)
            .map(|(ip, _)| *ip)
            .collect();
        done.into_iter()
            .filter_map(|ip| refusals.remove(&ip))
            .collect()
    }

    /// Puts back a sum that could not be audited, to be tried again.
    fn restore(&self, sum: Refusals) {
        let mut refusals = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        match refusals.get_mut(&sum.ip) {
            // Refused again meanwhile: one sum over both spans.
            Some(newer) => {
                newer.count += sum.count;
                newer.from_ms = sum.from_ms;
                newer.started = sum.started;
                newer.ctx = sum.ctx;
            }
            None => {
                refusals.insert(sum.ip, sum);
            }
        }
    }

    /// Counts one failed verify from `ip`. Returns the seconds until its window ends if the
    /// address had already used up `threshold` failures in it (the failure is refused), else
    /// `None`. A threshold of 0 turns the throttle off.
    pub(crate) fn fail(&self, ip: IpAddr, threshold: u32, now: Instant) -> Option<u64> {
        if threshold == 0 {
            return None;
        }
        let ip = bucket(ip);
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= MAX_ADDRESSES && !windows.contains_key(&ip) {
            prune(&mut windows, threshold, now);
        }
        let window = windows.entry(ip).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.saturating_duration_since(window.start) >= WINDOW {
            *window = Window {
                start: now,
                failures: 0,
            };
        }
        let over = window.failures >= threshold;
        window.failures = window.failures.saturating_add(1);
        over.then(|| seconds_left(now.saturating_duration_since(window.start)))
    }
}

/// Whole seconds left in a window of age `age`, rounded up and never 0 (a client told "0"
/// would retry at once).
fn seconds_left(age: Duration) -> u64 {
    let left = WINDOW.saturating_sub(age);
    (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
}

/// Writes the finished refusal sums to the audit log every [`SUMMARIZE_EVERY`], until the task
/// is dropped; [`flush`] writes the rest when the server stops.
pub(crate) async fn summarize(state: AppState) {
    loop {
        tokio::time::sleep(SUMMARIZE_EVERY).await;
        flush(&state, false).await;
    }
}

/// Audits the due sums (every sum if `all`); a sum the log cannot take now is kept for the
/// next round.
pub(crate) async fn flush(state: &AppState, all: bool) {
    let throttle = state.throttle();
    for sum in throttle.due(Instant::now(), all) {
        let vault = state.vault().clone();
        let entry = sum.clone();
        let written = blocking(move || {
            vault.audit_throttled(&entry.ctx, entry.count, entry.from_ms, entry.until_ms)
        })
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "auditing a sum of throttled verifies failed; kept for the next round");
            throttle.restore(sum);
        }
    }
}

/// The address a failure counts against: IPv4 as is, IPv6 by its /64.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// Makes room: drops finished windows, then (if still nine tenths full) addresses under the
/// threshold, then whatever is left, until nine tenths full. Runs only when the map is full, so
/// its cost is spread over the insertions that filled it.
fn prune(windows: &mut HashMap<IpAddr, Window>, threshold: u32, now: Instant) {
    let target = MAX_ADDRESSES / 10 * 9;
    windows.retain(|_, w| now.saturating_duration_since(w.start) < WINDOW);
    if windows.len() > target {
        windows.retain(|_, w| w.failures >= threshold);
    }
    if windows.len() > target {
        tracing::warn!(
            addresses = windows.len(),
            "verify throttle full of throttled addresses: forgetting some"
        );
        let excess = windows.len() - target;
        let drop: Vec<IpAddr> = windows.keys().take(excess).copied().collect();
        for ip in drop {
            windows.remove(&ip);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_threshold_until_the_window_ends() {
        let t = Throttle::default();
        let a: IpAddr = "203.0.113.9".parse().unwrap();
        let b: IpAddr = "203.0.113.10".parse().unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.fail(a, 3, start), None);
        }
        assert_eq!(t.fail(a, 3, start), Some(60));
        assert_eq!(t.fail(a, 3, start + Duration::from_millis(59_500)), Some(1));
        assert_eq!(t.fail(b, 3, start), None);
        // A new window.
        assert_eq!(t.fail(a, 3, start + WINDOW), None);
        // Off.
        for _ in 0..10 {
            assert_eq!(t.fail(b, 0, start), None);
        }
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let t = Throttle::default();
        let now = Instant::now();
        assert_eq!(t.fail("2001:db8:1:2::1".parse().unwrap(), 1, now), None);
        assert_eq!(
            t.fail("2001:db8:1:2:ffff::9".parse().unwrap(), 1, now),
            Some(60)
        );
        assert_eq!(t.fail("2001:db8:1:3::1".parse().unwrap(), 1, now), None);
        assert_eq!(t.fail("198.51.100.1".parse().unwrap(), 1, now), None);
        assert_eq!(
            t.fail("::ffff:198.51.100.1".parse().unwrap(), 1, now),
            Some(60)
        );
    }
}
