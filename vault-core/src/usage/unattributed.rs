//! The signals the server raises itself, without an audit entry: failed verifies without an
//! end-user address (`unattributed_failures`) and disk readings (`disk_alarm`).

use std::collections::VecDeque;

use super::aggregate::{MERGE_WINDOW_MS, Signal, SignalKind};

/// Unattributed-failure signals kept.
const MAX_UNATTRIBUTED: usize = 1_000;

/// Failed verifies without an end-user address (a one-minute window), and the signals the
/// server raises itself (`unattributed_failures`, `disk_alarm`). In memory only (an audit
/// entry cannot tell an end user's address from a peer's, and a disk reading is no entry), so
/// these signals are neither stored nor rebuilt.
#[derive(Debug, Default)]
pub(super) struct Unattributed {
    pub(super) minute: u64,
    pub(super) count: u64,
    pub(super) signals: VecDeque<Signal>,
    next_id: u64,
}

impl Unattributed {
    /// Extends the newest signal of `kind` if it is within the merge window of `now_ms` (one
    /// more occurrence, `peer` among its addresses), else starts one with `count` occurrences;
    /// returns a signal that was started, to be announced.
    pub(super) fn note(
        &mut self,
        kind: SignalKind,
        now_ms: u64,
        count: u64,
        peer: Option<&str>,
    ) -> Option<Signal> {
        let open = self
            .signals
            .iter_mut()
            .rev()
            .find(|s| s.kind == kind && s.last_at_ms.saturating_add(MERGE_WINDOW_MS) > now_ms);
        if let Some(s) = open {
            s.last_at_ms = now_ms;
            s.count += 1;
            s.add_client(peer);
            return None;
        }
        let s = Signal {
            id: self.next_id,
            kind,
            key_id: None,
            owner: None,
            first_at_ms: now_ms,
            last_at_ms: now_ms,
            count,
            first_seq: None,
            last_seq: None,
            clients: peer.map(|p| vec![p.to_owned()]).unwrap_or_default(),
            clients_truncated: false,
            previous_secret_expires_at: None,
            baseline_per_hour: None,
        };
        self.next_id += 1;
        self.signals.push_back(s.clone());
        if self.signals.len() > MAX_UNATTRIBUTED {
            self.signals.pop_front();
        }
        Some(s)
    }
}
