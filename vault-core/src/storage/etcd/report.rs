//! What each node publishes about itself for `GET /v1/sys/cluster` (DESIGN section 6): the etcd
//! revision its view has applied, whether that view is current, and whether it is sealed.
//!
//! The registration thread (`registry.rs`) writes it every second, on the node's lease, so a
//! node that dies takes its report with it:
//!
//! ```text
//! P/0xFF "report/" node id   on the node's lease; value: u8 version (1), i64 BE revision the
//!                            view has applied every change up to (0: no view yet), u8 flags
//!                            (bit 0: the view is current, bit 1: the node is sealed)
//! ```
//!
//! A report is at most about a second old; "current" is the node's own judgement (its view
//! matched a linearizable read sent at most a second before the report was written), so no
//! reader compares its clock with another host's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use etcd_client::PutOptions;

use super::Reader;
use super::members::Failure;
use super::watch::ViewState;

/// The version byte of a report.
const VERSION: u8 = 1;
const CURRENT: u8 = 1;
const SEALED: u8 = 2;

/// A node's state as its report says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeReport {
    /// The etcd revision up to which the node's view has applied every change (0: none yet).
    pub applied_revision: i64,
    /// Whether the node's view was current (at most a second old) when it reported.
    pub view_current: bool,
    /// Whether the node was sealed when it reported.
    pub sealed: bool,
}

impl NodeReport {
    fn encode(&self) -> Vec<u8> {
        let mut value = vec![VERSION];
        value.extend_from_slice(&self.applied_revision.to_be_bytes());
        let flags =
            if self.view_current { CURRENT } else { 0 } | if self.sealed { SEALED } else { 0 };
        value.push(flags);
        value
    }

    /// The report in `value`, if it is one this build reads.
    pub(super) fn decode(value: &[u8]) -> Option<NodeReport> {
        let (&version, rest) = value.split_first()?;
        if version != VERSION {
            return None;
        }
        let applied_revision = i64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let flags = *rest.get(8)?;
        Some(NodeReport {
            applied_revision,
            view_current: flags & CURRENT != 0,
            sealed: flags & SEALED != 0,
        })
    }
}

/// What this process knows of its node, for its reports: the view (once started) and the
/// seal state, which the vault sets through its [`Registration`](super::registry::Registration).
#[derive(Debug)]
pub(super) struct Reporting {
    view: Mutex<Weak<ViewState>>,
    sealed: AtomicBool,
}

impl Default for Reporting {
    fn default() -> Self {
        Reporting {
            view: Mutex::new(Weak::new()),
            sealed: AtomicBool::new(true),
        }
    }
}

impl Reporting {
    pub(super) fn set_view(&self, view: &Arc<ViewState>) {
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = Arc::downgrade(view);
    }

    pub(super) fn set_sealed(&self, sealed: bool) {
        self.sealed.store(sealed, Ordering::Release);
    }

    /// This node's state now.
    pub(super) fn now(&self) -> NodeReport {
        let view = self
            .view
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .upgrade();
        let (applied_revision, view_current) = view.map_or((0, false), |v| v.snapshot());
        NodeReport {
            applied_revision,
            view_current,
            sealed: self.sealed.load(Ordering::Acquire),
        }
    }
}

impl Reader {
    pub(super) fn report_key(&self, node: &str) -> Vec<u8> {
        self.named(b"report/", node)
    }

    /// Writes this node's report, as `reporting` has it now, on `lease`.
    pub(super) fn publish(
        &self,
        node: &str,
        lease: i64,
        reporting: &Reporting,
    ) -> Result<(), Failure> {
        let k = self.report_key(node);
        let value = reporting.now().encode();
        self.members
            .call(move |mut client| {
                let (k, value) = (k.clone(), value.clone());
                async move {
                    client
                        .put(k, value, Some(PutOptions::new().with_lease(lease)))
                        .await
                }
            })
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_and_another_version_is_not_read() {
        let report = NodeReport {
            applied_revision: 1234,
            view_current: true,
            sealed: false,
        };
        let value = report.encode();
        assert_eq!(value, [1, 0, 0, 0, 0, 0, 0, 4, 0xD2, 1]);
        assert_eq!(NodeReport::decode(&value), Some(report));
        let sealed = NodeReport {
            applied_revision: 0,
            view_current: false,
            sealed: true,
        };
        assert_eq!(NodeReport::decode(&sealed.encode()), Some(sealed));
        let mut newer = value.clone();
        newer[0] = 2;
        assert_eq!(NodeReport::decode(&newer), None);
        assert_eq!(NodeReport::decode(&value[..9]), None);
    }
}
