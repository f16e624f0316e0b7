//! Prometheus metrics: what handlers record, and the rendering that `GET /metrics`
//! (`routes::metrics`) answers with.
//!
//! The `metrics` facade has one recorder per process, so the Prometheus recorder is installed
//! once (when the first router is built, or the first verify is recorded) and shared by every
//! [`app`](crate::app) in the process; its handle lives in a `OnceLock`. If the host program
//! installed another recorder first, `GET /metrics` answers 503 and the host exports instead.
//!
//! | metric | kind | what |
//! | --- | --- | --- |
//! | `keyvault_verifies_total{code}` | counter | verifies answered, by code (`VALID`, `NOT_FOUND`, ...) |
//! | `keyvault_verify_seconds` | histogram | time to answer a verify (buckets 50 µs to 1 s) |
//! | `keyvault_audit_queue_depth` | gauge | commits waiting for the audit writer |
//! | `keyvault_audit_entries` | gauge | entries in the audit log |
//! | `keyvault_sealed` | gauge | 1 sealed, 0 unsealed |
//! | `keyvault_audit_stopped` | gauge | 1 while the audit log is stopped (integrity failure, rollback, fork) |
//! | `keyvault_record_rollbacks` | gauge | key, credits and token rows refused since start as older than one seen (rolled back in the store) |
//! | `keyvault_data_dir_bytes` | gauge | bytes on disk in the data directory (the audit log is most of it) |
//! | `keyvault_disk_available_bytes` | gauge | bytes left on the data directory's filesystem |
//! | `keyvault_disk_total_bytes` | gauge | size of that filesystem |
//! | `keyvault_audit_live_entries` | gauge | audit entries in the live log (not archived) |
//! | `keyvault_audit_oldest_entry_timestamp_seconds` | gauge | time of the oldest live audit entry |
//! | `keyvault_disk_alarm` | gauge | 1 while the filesystem is over the high-water mark |
//! | `keyvault_disk_alarms_total` | counter | times the disk alarm rose |
//! | `keyvault_usage_signals_total{kind}` | counter | suspicious-activity signals raised, by kind (`wrong_secret`, `new_client`, ...) |
//! | `keyvault_verify_failures_unattributed_total` | counter | failed verifies with no end-user address (nothing refused) |
//!
//! Gauges are read from the vault at scrape time, the disk ones from the disk watch's last
//! reading (see `disk`). Counters and the histogram are per process.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use vault_core::keys::VerifyCode;

const VERIFIES: &str = "keyvault_verifies_total";
const VERIFY_SECONDS: &str = "keyvault_verify_seconds";
const QUEUE_DEPTH: &str = "keyvault_audit_queue_depth";
const AUDIT_ENTRIES: &str = "keyvault_audit_entries";
const SEALED: &str = "keyvault_sealed";
const DATA_DIR_BYTES: &str = "keyvault_data_dir_bytes";
const DISK_AVAILABLE: &str = "keyvault_disk_available_bytes";
const DISK_TOTAL: &str = "keyvault_disk_total_bytes";
const AUDIT_LIVE: &str = "keyvault_audit_live_entries";
const AUDIT_STOPPED: &str = "keyvault_audit_stopped";
const RECORD_ROLLBACKS: &str = "keyvault_record_rollbacks";
const AUDIT_OLDEST: &str = "keyvault_audit_oldest_entry_timestamp_seconds";
const DISK_ALARM: &str = "keyvault_disk_alarm";
const DISK_ALARMS: &str = "keyvault_disk_alarms_total";
const SIGNALS: &str = "keyvault_usage_signals_total";
/// Failed verifies with no end-user address (counted in `verify`).
pub(crate) const UNATTRIBUTED: &str = "keyvault_verify_failures_unattributed_total";

/// Upper bounds of the verify-time buckets, in seconds: 50 µs to 1 s.
const VERIFY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// How often recorded histogram samples are folded into their buckets between scrapes, so that
/// an unscraped server's memory does not grow with its verifies.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Counts every signal `vault` raises from now on, by kind (on the vault's usage thread).
pub(crate) fn count_signals(vault: &vault_core::Vault) {
    install();
    vault.on_usage_signal(std::sync::Arc::new(|signal: &vault_core::usage::Signal| {
        metrics::counter!(SIGNALS, "kind" => signal.kind.as_str()).increment(1);
    }));
}

/// Records one verify: its code and how long it took.
pub(crate) fn verify_observed(code: VerifyCode, seconds: f64) {
    // The handles are made once: looking a labelled metric up by name costs a hash and a map
    // lookup per call, on every verify.
    static HANDLES: OnceLock<VerifyHandles> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        install();
        VerifyHandles {
            by_code: CODES.map(|c| metrics::counter!(VERIFIES, "code" => c.as_str())),
            seconds: metrics::histogram!(VERIFY_SECONDS),
        }
    });
    handles.by_code[code_index(code)].increment(1);
    handles.seconds.record(seconds);
}

/// The verify metrics' handles, one counter per code.
struct VerifyHandles {
    by_code: [metrics::Counter; CODES.len()],
    seconds: metrics::Histogram,
}

/// Every verify code, in the order of [`code_index`].
const CODES: [VerifyCode; 9] = [
    VerifyCode::Malformed,
    VerifyCode::NotFound,
    VerifyCode::Revoked,
    VerifyCode::Disabled,
    VerifyCode::Expired,
    VerifyCode::InsufficientScope,
    VerifyCode::RateLimited,
    VerifyCode::UsageExceeded,
    VerifyCode::Valid,
];

/// Where `code` is in [`CODES`] (a match, so that a new code fails to compile here).
fn code_index(code: VerifyCode) -> usize {
    match code {
        VerifyCode::Malformed => 0,
        VerifyCode::NotFound => 1,
        VerifyCode::Revoked => 2,
        VerifyCode::Disabled => 3,
        VerifyCode::Expired => 4,
        VerifyCode::InsufficientScope => 5,
        VerifyCode::RateLimited => 6,
        VerifyCode::UsageExceeded => 7,
        VerifyCode::Valid => 8,
    }
}

/// Counts a rise of the disk alarm.
pub(crate) fn disk_alarm_raised() {
    install();
    metrics::counter!(DISK_ALARMS).increment(1);
}

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder, once; `None` if another was installed first.
pub(crate) fn install() -> Option<&'static PrometheusHandle> {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(VERIFY_SECONDS.to_owned()), VERIFY_BUCKETS);
        let handle = match builder.and_then(PrometheusBuilder::install_recorder) {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!(error = %e, "no Prometheus recorder: GET /metrics answers 503");
                return None;
            }
        };
        describe();
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        if let Err(e) = spawned {
            // Scrapes still fold the samples in; only an unscraped server's memory grows.
            tracing::warn!(error = %e, "the metrics upkeep thread did not start");
        }
        Some(handle)
    });
    HANDLE.get().and_then(Option::as_ref)
}

fn describe() {
    metrics::describe_counter!(VERIFIES, "Verifies answered, by code.");
    metrics::describe_histogram!(
        VERIFY_SECONDS,
        metrics::Unit::Seconds,
        "Time to answer a verify."
    );
    metrics::describe_gauge!(QUEUE_DEPTH, "Commits waiting for the audit writer.");
    metrics::describe_gauge!(AUDIT_ENTRIES, "Entries in the audit log.");
    metrics::describe_gauge!(SEALED, "1 if the vault is sealed, else 0.");
    metrics::describe_gauge!(
        AUDIT_STOPPED,
        "1 if the audit log is stopped (integrity failure, rollback or fork): every operation fails."
    );
    metrics::describe_gauge!(
        RECORD_ROLLBACKS,
        "Key, credits and token rows refused since start as older than one already seen: rolled back in the store."
    );
    metrics::describe_gauge!(
        DATA_DIR_BYTES,
        metrics::Unit::Bytes,
        "Bytes on disk in the data directory."
    );
    metrics::describe_gauge!(
        DISK_AVAILABLE,
        metrics::Unit::Bytes,
        "Bytes left on the data directory's filesystem."
    );
    metrics::describe_gauge!(
        DISK_TOTAL,
        metrics::Unit::Bytes,
        "Size of the data directory's filesystem."
    );
    metrics::describe_gauge!(AUDIT_LIVE, "Audit entries in the live log (not archived).");
    metrics::describe_gauge!(
        AUDIT_OLDEST,
        metrics::Unit::Seconds,
        "Unix time of the oldest live audit entry."
    );
    metrics::describe_gauge!(
        DISK_ALARM,
        "1 while the data directory's filesystem is over its high-water mark."
    );
    metrics::describe_counter!(DISK_ALARMS, "Times the disk alarm rose.");
    metrics::describe_counter!(SIGNALS, "Suspicious-activity signals raised, by kind.");
    metrics::describe_counter!(
        UNATTRIBUTED,
        "Failed verifies (MALFORMED, NOT_FOUND) with no end-user address, so refused for no one."
    );
    metrics::counter!(UNATTRIBUTED).increment(0);
    // Every kind from the start, at 0, so that a rate over it is defined before the first one.
    for kind in vault_core::usage::SignalKind::ALL {
        metrics::counter!(SIGNALS, "kind" => kind.as_str()).increment(0);
    }
}

/// Serialises scrapes: each sets the gauges from its own vault and renders them before another
/// may set them (tests run many vaults in one process). A std `Mutex`: no await inside.
static SCRAPE: Mutex<()> = Mutex::new(());

/// What a scrape reads: the vault's state and the disk watch's last reading.
pub(crate) struct Scrape {
    pub(crate) sealed: bool,
    pub(crate) queue_depth: usize,
    pub(crate) audit_stopped: bool,
    pub(crate) record_rollbacks: u64,
    pub(crate) audit_size: u64,
    pub(crate) disk_alarm: bool,
    pub(crate) disk: Option<vault_core::disk::DiskUsage>,
}

/// Sets the gauges from what `read` reads and renders every metric in the Prometheus text
/// format; `None` if the host program installed its own recorder.
pub(crate) fn render(read: impl FnOnce() -> Scrape) -> Option<String> {
    let handle = install()?;
    let _one = SCRAPE.lock().unwrap_or_else(|e| e.into_inner());
    let now = read();
    metrics::gauge!(SEALED).set(if now.sealed { 1.0 } else { 0.0 });
    metrics::gauge!(QUEUE_DEPTH).set(now.queue_depth as f64);
    metrics::gauge!(AUDIT_STOPPED).set(if now.audit_stopped { 1.0 } else { 0.0 });
    metrics::gauge!(RECORD_ROLLBACKS).set(now.record_rollbacks as f64);
    metrics::gauge!(AUDIT_ENTRIES).set(now.audit_size as f64);
    metrics::gauge!(DISK_ALARM).set(if now.disk_alarm { 1.0 } else { 0.0 });
    if let Some(usage) = now.disk {
        metrics::gauge!(DATA_DIR_BYTES).set(usage.data_bytes as f64);
        metrics::gauge!(DISK_AVAILABLE).set(usage.fs_available_bytes as f64);
        metrics::gauge!(DISK_TOTAL).set(usage.fs_total_bytes as f64);
        metrics::gauge!(AUDIT_LIVE).set(usage.audit_live_entries as f64);
        if let Some(ms) = usage.oldest_audit_ms {
            metrics::gauge!(AUDIT_OLDEST).set(ms as f64 / 1000.0);
        }
    }
    Some(handle.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_has_its_own_counter() {
        for (i, code) in CODES.iter().enumerate() {
            assert_eq!(code_index(*code), i, "{code:?}");
        }
    }
}
