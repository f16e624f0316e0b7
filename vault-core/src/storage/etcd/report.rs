//! What each node publishes about itself for `GET /v1/sys/cluster` (DESIGN section 6): the etcd
//! revision its view has applied, whether that view is current, whether it is sealed, and the
//! address its API serves on (for `audit export --node` and `--cluster`).
//!
//! The registration thread (`registry.rs`) writes it every second, on the node's lease, so a
//! node that dies takes its report with it (with the node's rate-limit tally beside it in the
//! same transaction when it has one, `rates.rs`):
//!
//! ```text
//! P/0xFF "report/" node id   on the node's lease; value: u8 version (1), i64 BE revision the
//!                            view has applied every change up to (0: no view yet), u8 flags
//!                            (bit 0: the view is current, bit 1: the node is sealed);
//!                            from version 2: u16 BE length, then that many bytes of the
//!                            node's API address (UTF-8; length 0: none known yet)
//! ```
//!
//! The address is the one the server bound, as `serve` prints it (`http://127.0.0.1:8731`,
//! `https://…`, `unix:///path`), set once the listener is bound, so the first report or two
//! of a starting node have none. This build writes version 2 and reads 1 and 2 (a version 1
//! report, from an older build, has no address).
//!
//! A report is at most about a second old; "current" is the node's own judgement (its view
//! matched a linearizable read sent at most a second before the report was written), so no
//! reader compares its clock with another host's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use etcd_client::{PutOptions, Txn, TxnOp};

use super::Reader;
use super::members::Failure;
use super::published::Checkpoints;
use super::rates::RatesSource;
use super::watch::ViewState;

/// The version byte of a report this build writes.
const VERSION: u8 = 2;
/// The version before the address was added, still read.
const VERSION_1: u8 = 1;
/// The longest address a report carries (a longer one is not published).
pub const MAX_ADDRESS: usize = 1024;
const CURRENT: u8 = 1;
const SEALED: u8 = 2;

/// A node's state as its report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// The etcd revision up to which the node's view has applied every change (0: none yet).
    pub applied_revision: i64,
    /// Whether the node's view was current (at most a second old) when it reported.
    pub view_current: bool,
    /// Whether the node was sealed when it reported.
    pub sealed: bool,
    /// The address the node's API serves on (`http://127.0.0.1:8731`), once it is bound.
    pub address: Option<String>,
}

impl NodeReport {
    fn encode(&self) -> Vec<u8> {
        let mut value = vec![VERSION];
        value.extend_from_slice(&self.applied_revision.to_be_bytes());
        let flags =
            if self.view_current { CURRENT } else { 0 } | if self.sealed { SEALED } else { 0 };
        value.push(flags);
        let address = self.address.as_deref().unwrap_or_default().as_bytes();
        // Invariant: `Reporting::set_address` keeps addresses within MAX_ADDRESS (< 2^16).
        let len = u16::try_from(address.len()).expect("an address fits in u16");
        value.extend_from_slice(&len.to_be_bytes());
        value.extend_from_slice(address);
        value
    }

    /// The report in `value`, if it is one this build reads.
    pub(super) fn decode(value: &[u8]) -> Option<NodeReport> {
        let (&version, rest) = value.split_first()?;
        if version != VERSION && version != VERSION_1 {
            return None;
        }
        let applied_revision = i64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let flags = *rest.get(8)?;
        let address = if version == VERSION_1 {
            None
        } else {
            let len = u16::from_be_bytes(rest.get(9..11)?.try_into().ok()?) as usize;
            let bytes = rest.get(11..11 + len)?;
            Some(String::from_utf8(bytes.to_vec()).ok()?).filter(|a| !a.is_empty())
        };
        Some(NodeReport {
            applied_revision,
            view_current: flags & CURRENT != 0,
            sealed: flags & SEALED != 0,
            address,
        })
    }
}

/// What this process knows of its node, for its reports: the view (once started) and the
/// seal state, which the vault sets through its [`Registration`](super::registry::Registration).
pub(super) struct Reporting {
    view: Mutex<Weak<ViewState>>,
    sealed: AtomicBool,
    address: Mutex<Option<String>>,
    /// The log's checkpoints, written beside the report (`published.rs`).
    pub(super) checkpoints: Checkpoints,
    /// What gives the node's rate-limit tally, published beside the report (`rates.rs`).
    rates: Mutex<Option<RatesSource>>,
}

impl std::fmt::Debug for Reporting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporting")
            .field("sealed", &self.sealed)
            .finish_non_exhaustive()
    }
}

impl Default for Reporting {
    fn default() -> Self {
        Reporting {
            view: Mutex::new(Weak::new()),
            sealed: AtomicBool::new(true),
            address: Mutex::new(None),
            checkpoints: Checkpoints::default(),
            rates: Mutex::new(None),
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

    /// Publishes `address` from the next report on; one longer than [`MAX_ADDRESS`] bytes is
    /// not published (the node then has no address in the cluster's list).
    pub(super) fn set_address(&self, address: &str) {
        let kept = (address.len() <= MAX_ADDRESS).then(|| address.to_owned());
        *self.address.lock().unwrap_or_else(|e| e.into_inner()) = kept;
    }

    /// Publishes what `source` gives beside each report from now on (`rates.rs`).
    pub(super) fn set_rates(&self, source: RatesSource) {
        *self.rates.lock().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// The node's rate-limit tally to publish now, if it has one.
    fn rates(&self) -> Option<Vec<u8>> {
        let mut source = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        source.as_mut().and_then(|give| give())
    }

    /// Takes the tally that could not be published (etcd out of reach) and lets it go: tokens
    /// of a minute ago told late would hold the key back on the other nodes for nothing.
    pub(super) fn let_rates_go(&self) {
        let _ = self.rates();
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
            address: self
                .address
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

impl Reader {
    pub(super) fn report_key(&self, node: &str) -> Vec<u8> {
        self.named(b"report/", node)
    }

    /// Writes this node's report, as `reporting` has it now, on `lease`, and its rate-limit
    /// tally if it has one, in the same transaction.
    pub(super) fn publish(
        &self,
        node: &str,
        lease: i64,
        reporting: &Reporting,
    ) -> Result<(), Failure> {
        let on_lease = PutOptions::new().with_lease(lease);
        let mut puts = vec![TxnOp::put(
            self.report_key(node),
            reporting.now().encode(),
            Some(on_lease.clone()),
        )];
        if let Some(tally) = reporting.rates() {
            puts.push(TxnOp::put(self.rates_key(node), tally, Some(on_lease)));
        }
        let txn = Txn::new().and_then(puts);
        self.members
            .call(move |mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
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
            address: Some("http://a:1".into()),
        };
        let value = report.encode();
        let mut expected = vec![2, 0, 0, 0, 0, 0, 0, 4, 0xD2, 1, 0, 10];
        expected.extend_from_slice(b"http://a:1");
        assert_eq!(value, expected);
        assert_eq!(NodeReport::decode(&value), Some(report));
        let sealed = NodeReport {
            applied_revision: 0,
            view_current: false,
            sealed: true,
            address: None,
        };
        assert_eq!(NodeReport::decode(&sealed.encode()), Some(sealed));
        let mut newer = value.clone();
        newer[0] = 3;
        assert_eq!(NodeReport::decode(&newer), None);
        assert_eq!(NodeReport::decode(&value[..9]), None);
        assert_eq!(NodeReport::decode(&value[..value.len() - 1]), None);
    }

    #[test]
    fn a_version_1_report_of_an_older_build_reads_without_an_address() {
        let old = [1, 0, 0, 0, 0, 0, 0, 4, 0xD2, 1];
        assert_eq!(
            NodeReport::decode(&old),
            Some(NodeReport {
                applied_revision: 1234,
                view_current: true,
                sealed: false,
                address: None,
            })
        );
    }

    #[test]
    fn an_address_too_long_is_not_published() {
        let reporting = Reporting::default();
        reporting.set_address("http://127.0.0.1:8731");
        assert_eq!(
            reporting.now().address.as_deref(),
            Some("http://127.0.0.1:8731")
        );
        reporting.set_address(&"x".repeat(MAX_ADDRESS + 1));
        assert_eq!(reporting.now().address, None);
        assert_eq!(
            NodeReport::decode(&reporting.now().encode()).map(|r| r.address),
            Some(None)
        );
    }
}
