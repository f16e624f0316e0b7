//! The disk watch: every [`ServerConfig::disk_check_interval`](crate::ServerConfig) while
//! [`serve`](crate::serve) runs, read the vault's disk figures for `/metrics`, and raise the
//! alarm when the data directory's filesystem is fuller than
//! [`ServerConfig::disk_high_water_percent`](crate::ServerConfig).
//!
//! The alarm is a log line at `warn` when it rises (again every [`REMIND_EVERY`] while it
//! stays up, and at `info` when it falls), the gauge `keyvault_disk_alarm`, the counter
//! `keyvault_disk_alarms_total`, and a `disk_alarm` usage signal (`GET /v1/signals`, and
//! `keyvault_usage_signals_total{kind="disk_alarm"}`). A full disk stops every verify (the audit log fails closed), so
//! the default mark leaves room to archive (`keyvault audit archive`) long before that.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vault_core::disk::DiskUsage;

use vault_core::Vault;

use crate::error::blocking;
use crate::limits::ServerConfig;

/// While the alarm stays up, its log line repeats this often.
pub const REMIND_EVERY: Duration = Duration::from_secs(300);

/// The last reading and the alarm, shared with `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct DiskWatch {
    last: Mutex<Option<DiskUsage>>,
    alarm: AtomicBool,
}

impl DiskWatch {
    /// The last reading, if one was taken.
    pub(crate) fn last(&self) -> Option<DiskUsage> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the filesystem was over the high-water mark at the last reading.
    pub(crate) fn alarm(&self) -> bool {
        self.alarm.load(Ordering::Relaxed)
    }
}

/// Reads the figures now and every interval after, until the task is dropped.
pub(crate) async fn watch(vault: Vault, watch: Arc<DiskWatch>, config: ServerConfig) {
    let mut reminded: Option<Instant> = None;
    loop {
        check(&vault, &watch, &config, &mut reminded).await;
        tokio::time::sleep(config.disk_check_interval).await;
    }
}

async fn check(
    vault: &Vault,
    watch: &DiskWatch,
    config: &ServerConfig,
    reminded: &mut Option<Instant>,
) {
    let reading = vault.clone();
    let usage = match blocking(move || reading.disk_usage()).await {
        Ok(usage) => usage,
        Err(e) => {
            tracing::warn!(error = e.message, "reading the disk figures failed");
            return;
        }
    };
    let mark = f64::from(config.disk_high_water_percent);
    let used = usage.used_percent();
    let over = used >= mark;
    let was = watch.alarm.swap(over, Ordering::Relaxed);
    if over {
        vault.note_disk_alarm();
        let due = reminded.is_none_or(|at| at.elapsed() >= REMIND_EVERY);
        if !was {
            crate::metrics::disk_alarm_raised();
        }
        if !was || due {
            tracing::warn!(
                used_percent = format!("{used:.1}"),
                high_water_percent = config.disk_high_water_percent,
                available_bytes = usage.fs_available_bytes,
                data_bytes = usage.data_bytes,
                audit_live_entries = usage.audit_live_entries,
                "DISK ALARM: the data directory's filesystem is over its high-water mark; archive the audit log (keyvault audit archive) or add space before it fills, since a full disk stops every verify"
            );
            *reminded = Some(Instant::now());
        }
    } else if was {
        tracing::info!(
            used_percent = format!("{used:.1}"),
            "disk alarm cleared: the filesystem is below its high-water mark again"
        );
        *reminded = None;
    }
    *watch.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(usage);
}
