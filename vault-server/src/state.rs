//! [`AppState`]: what every handler shares (the open vault, the settings, the throttles and the
//! disk watch), apart from the router that [`app`](crate::app) builds over it, so that every
//! route file depends on the state and none on the crate's root.

use std::sync::Arc;

use vault_core::Vault;

use crate::disk::DiskWatch;
use crate::limits::ServerConfig;
use crate::throttle::{Refused, Sums, Throttle};

/// What every handler shares: the open vault and the server's settings. One allocation behind
/// a reference count: axum clones the state into every route service it calls and every
/// extractor that asks for it, over ten times a request, so a clone must cost one increment.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

#[derive(Debug, Clone)]
struct Shared {
    vault: Vault,
    config: ServerConfig,
    /// Turns true when [`serve`](crate::serve) stops accepting: long-lived answers (a followed audit export)
    /// end so that the drain can finish.
    closing: Arc<tokio::sync::watch::Sender<bool>>,
    /// The disk watch's last reading and alarm (see `disk`).
    disk: Arc<DiskWatch>,
    /// Failed verifies by end-user address, and the refusals not yet audited (see `throttle`).
    throttle: Arc<Throttle>,
    /// Failed token authentications not yet audited, by peer address (see `throttle`).
    refused_tokens: Arc<Sums>,
    /// Whether the router is served only on a loopback address or a Unix socket (see
    /// [`AppState::with_local_listener`]).
    local_listener: bool,
    /// Whether the router is served under TLS (the console's cookies are then `Secure`).
    tls: bool,
}

impl AppState {
    /// State over an open vault (sealed or not), with the default [`ServerConfig`]. Signals the
    /// vault raises from now on are counted in `keyvault_usage_signals_total`.
    pub fn new(vault: Vault) -> AppState {
        crate::metrics::count_signals(&vault);
        AppState(Arc::new(Shared {
            vault,
            config: ServerConfig::default(),
            closing: Arc::new(tokio::sync::watch::Sender::new(false)),
            disk: Arc::default(),
            throttle: Arc::default(),
            refused_tokens: Arc::new(Sums::new(Refused::Tokens)),
            local_listener: false,
            tls: false,
        }))
    }

    /// The same state with `change` made to its settings (the builders below, before serving;
    /// a state already shared is copied).
    fn changed(self, change: impl FnOnce(&mut Shared)) -> AppState {
        let mut shared = Arc::unwrap_or_clone(self.0);
        change(&mut shared);
        AppState(Arc::new(shared))
    }

    /// The same state with other settings (the usage thresholds go to the vault).
    pub fn with_config(self, config: ServerConfig) -> AppState {
        self.0.vault.set_usage_thresholds(config.usage);
        self.changed(|s| s.config = config)
    }

    /// The same state, saying whether the router is served only on a loopback address or a
    /// Unix socket: there `GET /metrics` and `GET /openapi.json` need no token; anywhere else
    /// they need a valid token of any role. [`serve`](crate::serve) sets it from its listener. The default,
    /// `false`, asks for a token, which is right for a router served some other way.
    pub fn with_local_listener(self, local: bool) -> AppState {
        self.changed(|s| s.local_listener = local)
    }

    /// The same state, saying whether the router is served under TLS; [`serve`](crate::serve)
    /// sets it from its listener.
    pub fn with_tls(self, tls: bool) -> AppState {
        self.changed(|s| s.tls = tls)
    }

    /// Whether the router is served under TLS.
    pub(crate) fn tls(&self) -> bool {
        self.0.tls
    }

    /// Whether the router is served only on a loopback address or a Unix socket.
    pub(crate) fn local_listener(&self) -> bool {
        self.0.local_listener
    }

    /// A receiver that turns true when the server stops accepting.
    pub(crate) fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.0.closing.subscribe()
    }

    /// The disk watch.
    pub(crate) fn disk(&self) -> &Arc<DiskWatch> {
        &self.0.disk
    }

    /// The verify throttle.
    pub(crate) fn throttle(&self) -> &Arc<Throttle> {
        &self.0.throttle
    }

    /// The failed token authentications not yet audited.
    pub(crate) fn refused_tokens(&self) -> &Arc<Sums> {
        &self.0.refused_tokens
    }

    /// Tells long-lived answers that the server is stopping.
    pub(crate) fn close(&self) {
        self.0.closing.send_replace(true);
    }

    /// The vault.
    pub fn vault(&self) -> &Vault {
        &self.0.vault
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }
}
