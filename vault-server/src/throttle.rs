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
//! refusals of each address are summed per minute, from its first refusal, in [`Sums`], and
//! [`summarize`] records each sum as one `key.verify.throttled` entry (outcome `THROTTLED`, the
//! address as the client, details `refused`, `from_ms`, `until_ms`) once its minute is over, and
//! every pending sum when the server stops. A crash loses at most the last minute's sums; the
//! refused requests changed nothing.
//!
//! Failed token authentications (`auth::require`) are summed the same way, per TCP peer
//! address (no peer: a Unix socket, summed as one), into one `token.authenticate` entry
//! (outcome `unauthorized`, details as above plus `presented_digest`, the keyed digest of the
//! window's first refused string, so that "was this leaked token tried" is answered for a token
//! tried on its own; one tried after other junk from the same peer in the same minute is
//! counted but not named). That keeps a 401 free of durable writes and the log's growth at one
//! entry per peer per minute.
//!
//! [`ServerConfig::verify_failures_per_minute`]: crate::ServerConfig::verify_failures_per_minute

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vault_core::{Context, Vault};

use crate::error::blocking;

/// How often finished refusal sums are written to the audit log.
pub(crate) const SUMMARIZE_EVERY: Duration = Duration::from_secs(5);

/// The window length.
const WINDOW: Duration = Duration::from_secs(60);

/// Most addresses tracked at once.
pub(crate) const MAX_ADDRESSES: usize = 100_000;

/// Failure counts by address, and the verifies refused for them.
#[derive(Debug)]
pub(crate) struct Throttle {
    /// A std mutex, not a Tokio one: no await is held, and the work under it is a map update.
    windows: Mutex<HashMap<IpAddr, Window>>,
    /// Refused verifies not yet in the audit log.
    pub(crate) refusals: Sums,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            windows: Mutex::default(),
            refusals: Sums::new(Refused::Verifies),
        }
    }
}

/// What a [`Sums`] counts, and so which entry it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Verifies refused by the throttle: `key.verify.throttled`.
    Verifies,
    /// Failed token authentications: `token.authenticate`.
    Tokens,
}

/// Refusals not yet in the audit log, summed per address (or per "no address") per minute,
/// each sum to be audited as one entry. Holds at most [`MAX_ADDRESSES`] sums.
#[derive(Debug)]
pub(crate) struct Sums {
    kind: Refused,
    /// A std mutex, not a Tokio one: no await is held, and the work under it is a map update.
    pending: Mutex<HashMap<Option<IpAddr>, Refusals>>,
}

/// The requests refused from one address in one minute, to be audited as one entry.
#[derive(Debug, Clone)]
pub(crate) struct Refusals {
    /// The address (its bucket) the sum is kept under.
    ip: Option<IpAddr>,
    /// The caller of the first refused request, with the address as its client.
    pub ctx: Context,
    /// Requests refused.
    pub count: u64,
    /// Unix ms of the first and the last.
    pub from_ms: u64,
    pub until_ms: u64,
    /// The keyed digest of the first refused string, where one is recorded.
    pub first_presented: Option<[u8; 32]>,
    started: Instant,
}

impl Sums {
    pub(crate) fn new(kind: Refused) -> Sums {
        Sums {
            kind,
            pending: Mutex::default(),
        }
    }

    /// Adds one refused request from `ip`, made by `ctx`'s caller, to the address's sum.
    /// `presented` gives the keyed digest of the refused string; it is called only for the
    /// first refusal of a sum.
    pub(crate) fn add(
        &self,
        ip: Option<IpAddr>,
        ctx: &Context,
        presented: impl FnOnce() -> Option<[u8; 32]>,
        now: Instant,
    ) {
        let ip = ip.map(bucket);
        let ms = now_ms();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Full (every address refused within a minute): sum the newcomers under the
        // unspecified address rather than grow without bound.
        let ip = if pending.len() >= MAX_ADDRESSES && !pending.contains_key(&ip) {
            Some(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
        } else {
            ip
        };
        let sum = pending.entry(ip).or_insert_with(|| Refusals {
            ip,
            ctx: match ip {
                Some(ip) => ctx.clone().with_client(address_text(ip)),
                None => ctx.clone(),
            },
            count: 0,
            from_ms: ms,
            until_ms: ms,
            first_presented: presented(),
            started: now,
        });
        sum.count += 1;
        sum.until_ms = ms;
    }

    /// Takes the sums whose minute is over (every sum if `all`).
    pub(crate) fn due(&self, now: Instant, all: bool) -> Vec<Refusals> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let done: Vec<Option<IpAddr>> = pending
            .iter()
            .filter(|(_, r)| all || now.saturating_duration_since(r.started) >= WINDOW)
            .map(|(ip, _)| *ip)
            .collect();
        done.into_iter()
            .filter_map(|ip| pending.remove(&ip))
            .collect()
    }

    /// Puts back a sum that could not be audited, to be tried again.
    fn restore(&self, sum: Refusals) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.get_mut(&sum.ip) {
            // Refused again meanwhile: one sum over both spans.
            Some(newer) => {
                newer.count += sum.count;
                newer.from_ms = sum.from_ms;
                newer.started = sum.started;
                newer.ctx = sum.ctx;
                newer.first_presented = sum.first_presented.or(newer.first_presented);
            }
            None => {
                pending.insert(sum.ip, sum);
            }
        }
    }

    /// Audits the due sums (every sum if `all`); a sum the log cannot take now is kept for the
    /// next round.
    async fn flush(&self, vault: &Vault, all: bool) {
        for sum in self.due(Instant::now(), all) {
            let vault = vault.clone();
            let entry = sum.clone();
            let kind = self.kind;
            let written = blocking(move || {
                let (ctx, n, from, until) =
                    (&entry.ctx, entry.count, entry.from_ms, entry.until_ms);
                match kind {
                    Refused::Verifies => vault.audit_throttled(ctx, n, from, until),
                    Refused::Tokens => {
                        vault.audit_refused_tokens(ctx, n, from, until, entry.first_presented)
                    }
                }
            })
            .await;
            if let Err(e) = written {
                tracing::warn!(error = %e, kind = ?self.kind, "auditing a sum of refused requests failed; kept for the next round");
                self.restore(sum);
            }
        }
    }
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
        self.refusals.add(Some(ip), ctx, || None, now);
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

/// Writes the finished refusal sums (verifies and tokens) to the audit log every
/// [`SUMMARIZE_EVERY`], until the task is dropped; [`flush`] writes the rest when the server
/// stops.
pub(crate) async fn summarize(vault: Vault, verifies: Arc<Throttle>, tokens: Arc<Sums>) {
    loop {
        tokio::time::sleep(SUMMARIZE_EVERY).await;
        flush(&vault, &verifies, &tokens, false).await;
    }
}

/// Audits the due sums of refused verifies and tokens (every sum if `all`); a sum the log
/// cannot take now is kept for the next round.
pub(crate) async fn flush(vault: &Vault, verifies: &Throttle, tokens: &Sums, all: bool) {
    verifies.refusals.flush(vault, all).await;
    tokens.flush(vault, all).await;
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
    fn refusal_sums_are_bounded_and_name_their_first_digest() {
        let sums = Sums::new(Refused::Tokens);
        let ctx = Context::new(vault_core::Actor::Anonymous);
        let now = Instant::now();
        let mut digests = 0;
        for i in 0..MAX_ADDRESSES as u32 + 10 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            sums.add(
                Some(ip),
                &ctx,
                || {
                    digests += 1;
                    Some([1; 32])
                },
                now,
            );
        }
        // The same peer again: counted, its digest not computed again.
        let first: IpAddr = "10.0.0.0".parse().unwrap();
        sums.add(Some(first), &ctx, || Some([2; 32]), now);
        sums.add(None, &ctx, || None, now);
        // One per address, and one for the overflow sum.
        assert_eq!(digests, MAX_ADDRESSES + 1);
        assert!(
            sums.due(now, false).is_empty(),
            "nothing is due before its minute"
        );
        let due = sums.due(now + WINDOW, false);
        assert_eq!(due.len(), MAX_ADDRESSES + 1);
        let total: u64 = due.iter().map(|r| r.count).sum();
        assert_eq!(total, MAX_ADDRESSES as u64 + 12);
        let overflow = due
            .iter()
            .find(|r| r.ip == Some(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)))
            .unwrap();
        assert_eq!(overflow.count, 11);
        let sum = due.iter().find(|r| r.ip == Some(first)).unwrap();
        assert_eq!((sum.count, sum.first_presented), (2, Some([1; 32])));
        assert_eq!(sum.ctx.client.as_deref(), Some("10.0.0.0"));
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
