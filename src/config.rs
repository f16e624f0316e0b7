//! The TOML config file of `keyvault serve`. Every field is optional; flags override it.
//!
//! ```toml
//! data_dir = "/var/lib/keyvault"
//! listen = "127.0.0.1:8731"          # or unix_socket = "/run/keyvault/keyvault.sock"
//! tls_cert = "/etc/keyvault/tls.crt"  # serve TLS (then any address may be used)
//! tls_key = "/etc/keyvault/tls.key"
//! insecure_listen = false            # allow a non-loopback address without TLS
//! unseal_passphrase_file = "/run/credentials/keyvault.service/passphrase"
//! trusted_proxies = ["127.0.0.1"]    # every proxy in front; the end user is the rightmost
//!                                    # x-forwarded-for address that is not one of them
//!
//! [limits]
//! body_bytes = 65536
//! header_bytes = 16384
//! request_timeout_ms = 10000
//! concurrency = 1024
//! unseal_failure_delay_ms = 1000
//!
//! [usage]                            # when suspicious-activity signals fire (these are the defaults)
//! wrong_secrets_per_hour = 1
//! previous_secret_warn_seconds = 3600
//! new_client_days = 30               # 0: off
//! rate_factor = 5
//! rate_min_per_hour = 100
//! rate_baseline_hours = 24
//! unattributed_failures_per_minute = 100   # 0: off
//!
//! [ui]
//! enabled = true                     # the web console under /ui/ (false: not served)
//!
//! [[audit.witness]]                  # repeat for each witness (keyvault witness serve)
//! url = "http://witness.example:8732"
//! key = "keyvault-witness/host+1234abcd+BA..."   # what `keyvault witness key` prints
//!
//! [storage]                          # where the shared state lives; "sled" (the default) needs nothing else
//! backend = "etcd"                   # a cluster node (DESIGN section 10; a build with
//! endpoints = ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]   # `--features etcd`)
//! prefix = "/keyvault/photos"        # one vault per prefix
//! node_id = "web-1"                  # stable, unique, [a-z0-9-]{1,32}
//! ca_cert = "/etc/keyvault/etcd-ca.crt"
//! cert = "/etc/keyvault/etcd-client.crt"
//! key = "/etc/keyvault/etcd-client.key"
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// The file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// TCP listen address.
    pub listen: Option<SocketAddr>,
    /// Unix socket path.
    pub unix_socket: Option<PathBuf>,
    /// Allow a non-loopback address without TLS.
    #[serde(default)]
    pub insecure_listen: bool,
    /// PEM certificate chain to serve TLS with.
    pub tls_cert: Option<PathBuf>,
    /// Its PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Unseal at start with the passphrase in this file.
    pub unseal_passphrase_file: Option<PathBuf>,
    /// Proxies trusted to name the end user: every proxy in front of the server, since the end
    /// user is the rightmost `x-forwarded-for` address that is not one of them.
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
    /// Limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Signal thresholds (every field optional; see `vault_core::usage::Thresholds`).
    #[serde(default)]
    pub usage: vault_core::usage::Thresholds,
    /// The disk watch.
    #[serde(default)]
    pub disk: DiskConfig,
    /// The audit log's witnesses.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The web console.
    #[serde(default)]
    pub ui: UiConfig,
    /// Where the shared state lives.
    #[serde(default)]
    pub storage: StorageConfig,
}

/// `[ui]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UiConfig {
    /// Whether the web console is served under `/ui/` (default true).
    pub enabled: Option<bool>,
}

/// `[storage]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sled` (the default: one host, everything in the data directory) or `etcd`.
    pub backend: Option<Backend>,
    /// etcd member URLs.
    pub endpoints: Option<Vec<String>>,
    /// The vault's key prefix in etcd.
    pub prefix: Option<String>,
    /// This node's id.
    pub node_id: Option<String>,
    /// The etcd members' CA certificate (PEM).
    pub ca_cert: Option<PathBuf>,
    /// This node's client certificate for etcd (PEM).
    pub cert: Option<PathBuf>,
    /// Its key (PEM).
    pub key: Option<PathBuf>,
}

/// `storage.backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One host: the sled database in the data directory.
    Sled,
    /// A cluster node: the shared state in etcd.
    Etcd,
}

/// `[audit]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `[[audit.witness]]`: every checkpoint is sent to each, and the vault never signs a log
    /// rolled back behind what they hold.
    #[serde(default)]
    pub witness: Vec<WitnessEntry>,
}

/// One `[[audit.witness]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessEntry {
    /// The witness's URL (its `add-checkpoint` is under it).
    pub url: String,
    /// Its verifier key, as `keyvault witness key` prints it.
    pub key: String,
}

/// `[disk]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The disk alarm rises when the data directory's filesystem is this full (percent).
    pub high_water_percent: Option<u8>,
    /// How often the disk figures are read.
    pub check_interval_seconds: Option<u64>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body.
    pub body_bytes: Option<usize>,
    /// Largest request head.
    pub header_bytes: Option<usize>,
    /// Time to answer a request.
    pub request_timeout_ms: Option<u64>,
    /// Requests in flight.
    pub concurrency: Option<usize>,
    /// Delay after a failed unseal attempt.
    pub unseal_failure_delay_ms: Option<u64>,
}

impl Config {
    /// Reads and parses a config file.
    pub fn read(path: &Path) -> anyhow::Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
        if config
            .disk
            .high_water_percent
            .is_some_and(|p| !(1..=100).contains(&p))
        {
            anyhow::bail!(
                "{}: disk.high_water_percent must be between 1 and 100",
                path.display()
            );
        }
        if config.disk.check_interval_seconds == Some(0) {
            anyhow::bail!(
                "{}: disk.check_interval_seconds must be at least 1",
                path.display()
            );
        }
        config
            .witnesses()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        config
            .cluster()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// The `[storage]` table, checked: `None` for the one-host backend (which takes no other
    /// field), the etcd settings for `backend = "etcd"`.
    pub fn cluster(&self) -> Result<Option<vault_core::storage::etcd_config::EtcdConfig>, String> {
        use vault_core::storage::etcd_config::{EtcdConfig, NodeId};
        let s = &self.storage;
        if s.backend != Some(Backend::Etcd) {
            let given = [
                ("endpoints", s.endpoints.is_some()),
                ("prefix", s.prefix.is_some()),
                ("node_id", s.node_id.is_some()),
                ("ca_cert", s.ca_cert.is_some()),
                ("cert", s.cert.is_some()),
                ("key", s.key.is_some()),
            ];
            return match given.iter().find(|(_, set)| *set) {
                Some((name, _)) => Err(format!("storage.{name} is only for backend = \"etcd\"")),
                None => Ok(None),
            };
        }
        let missing = |name: &str| format!("storage: backend = \"etcd\" needs {name}");
        let endpoints = s.endpoints.clone().ok_or_else(|| missing("endpoints"))?;
        let prefix = s.prefix.as_deref().ok_or_else(|| missing("prefix"))?;
        let node_id = s.node_id.as_deref().ok_or_else(|| missing("node_id"))?;
        let node_id = NodeId::parse(node_id).map_err(|e| format!("storage.{e}"))?;
        EtcdConfig::new(
            endpoints,
            prefix,
            node_id,
            s.ca_cert.clone(),
            s.cert.clone(),
            s.key.clone(),
        )
        .map(Some)
        .map_err(|e| format!("storage.{e}"))
    }

    /// The `[[audit.witness]]` tables, checked: a URL and a witness's verifier key each.
    pub fn witnesses(&self) -> Result<Vec<vault_core::witness::WitnessConfig>, String> {
        self.audit
            .witness
            .iter()
            .map(|w| vault_core::witness::WitnessConfig::new(&w.url, &w.key))
            .collect()
    }

    /// The server settings: the defaults, changed by this file.
    pub fn server_config(&self) -> vault_server::ServerConfig {
        let mut config = vault_server::ServerConfig::default();
        let l = &self.limits;
        if let Some(v) = l.body_bytes {
            config.limits.body_bytes = v;
        }
        if let Some(v) = l.header_bytes {
            config.limits.header_bytes = v;
        }
        if let Some(v) = l.request_timeout_ms {
            config.limits.request_timeout = Duration::from_millis(v);
        }
        if let Some(v) = l.concurrency {
            config.limits.concurrency = v;
        }
        if let Some(v) = l.unseal_failure_delay_ms {
            config.unseal_failure_delay = Duration::from_millis(v);
        }
        config.trusted_proxies = self.trusted_proxies.clone();
        if let Some(v) = self.disk.high_water_percent {
            config.disk_high_water_percent = v;
        }
        if let Some(v) = self.disk.check_interval_seconds {
            config.disk_check_interval = Duration::from_secs(v);
        }
        config.usage = self.usage;
        if let Some(v) = self.ui.enabled {
            config.ui_enabled = v;
        }
        config
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_unknown_fields() {
        let c: Config = toml::from_str("listen = \"127.0.0.1:9000\"\ntrusted_proxies = [\"10.0.0.1\"]\n[limits]\nconcurrency = 7\n").unwrap();
        assert_eq!(c.listen.unwrap().port(), 9000);
        let s = c.server_config();
        assert_eq!(s.limits.concurrency, 7);
        assert_eq!(s.trusted_proxies.len(), 1);
        assert!(toml::from_str::<Config>("lisen = 1").is_err());
        let c: Config = toml::from_str("[usage]\nrate_factor = 9\n").unwrap();
        let s = c.server_config();
        assert_eq!(s.usage.rate_factor, 9);
        assert_eq!(
            s.usage.rate_min_per_hour, 100,
            "the others keep their defaults"
        );
        assert!(toml::from_str::<Config>("[usage]\nrate_factr = 9\n").is_err());
        // The shipped example parses, and its [usage] section says the defaults.
        let example: Config = toml::from_str(include_str!("../deploy/keyvault.toml")).unwrap();
        assert_eq!(example.usage, vault_core::usage::Thresholds::default());
        let c: Config =
            toml::from_str("[disk]\nhigh_water_percent = 90\ncheck_interval_seconds = 2\n")
                .unwrap();
        let s = c.server_config();
        assert_eq!(s.disk_high_water_percent, 90);
        assert_eq!(s.disk_check_interval, Duration::from_secs(2));
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[disk]\nhigh_water_percent = 0\n").unwrap();
        let e = Config::read(&bad).unwrap_err().to_string();
        assert!(e.contains("between 1 and 100"), "{e}");
    }

    #[test]
    fn the_console_is_on_unless_turned_off() {
        let on: Config = toml::from_str("").unwrap();
        assert!(on.server_config().ui_enabled);
        let off: Config = toml::from_str("[ui]\nenabled = false\n").unwrap();
        assert!(!off.server_config().ui_enabled);
        assert!(toml::from_str::<Config>("[ui]\nenable = true\n").is_err());
    }

    #[test]
    fn witnesses_are_read_and_checked() {
        let cosigner =
            vault_core::audit::cosignature::Cosigner::from_seed("w.example/w1", &[1; 32]).unwrap();
        let key = cosigner.verifier().to_string();
        let c: Config = toml::from_str(&format!(
            "[[audit.witness]]\nurl = \"http://127.0.0.1:8732/\"\nkey = \"{key}\"\n"
        ))
        .unwrap();
        let w = c.witnesses().unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].url, "http://127.0.0.1:8732");
        assert_eq!(w[0].name(), "w.example/w1");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        // A log's key (type 0x01) is not a witness's.
        let log = vault_core::audit::note::NoteSigner::from_seed("log", &[2; 32]).unwrap();
        std::fs::write(
            &bad,
            format!(
                "[[audit.witness]]\nurl = \"http://h:1\"\nkey = \"{}\"\n",
                log.verifier()
            ),
        )
        .unwrap();
        let e = Config::read(&bad).unwrap_err().to_string();
        assert!(e.contains("witness key"), "{e}");
        std::fs::write(
            &bad,
            format!("[[audit.witness]]\nurl = \"ftp://h\"\nkey = \"{key}\"\n"),
        )
        .unwrap();
        let e = Config::read(&bad).unwrap_err().to_string();
        assert!(e.contains("http://"), "{e}");
        assert!(toml::from_str::<Config>("[[audit.witness]]\nurl = \"http://h\"\n").is_err());
    }

    fn storage(
        table: &str,
    ) -> Result<Option<vault_core::storage::etcd_config::EtcdConfig>, String> {
        let c: Config =
            toml::from_str(&format!("[storage]\n{table}")).map_err(|e| e.to_string())?;
        c.cluster()
    }

    #[test]
    fn the_storage_table_is_read_and_checked() {
        assert_eq!(Config::default().cluster(), Ok(None));
        assert_eq!(storage("backend = \"sled\"\n"), Ok(None));
        let etcd = "backend = \"etcd\"\nendpoints = [\"http://127.0.0.1:2379\"]\nprefix = \"/kv/photos\"\n";
        let config = storage(&format!("{etcd}node_id = \"web-1\"\n"))
            .unwrap()
            .unwrap();
        assert_eq!(config.node_id.as_str(), "web-1");
        assert_eq!(config.prefix, "/kv/photos");
        assert_eq!(config.endpoints, ["http://127.0.0.1:2379"]);
        let refused = [
            (
                format!("{etcd}node_id = \"Web_1\"\n"),
                "storage.node_id must be 1 to 32 characters of a-z, 0-9 and '-' (got 5 characters, some not allowed)",
            ),
            (
                format!("{etcd}node_id = \"{}\"\n", "a".repeat(33)),
                "storage.node_id must be 1 to 32 characters of a-z, 0-9 and '-' (got 33 characters)",
            ),
            (etcd.to_owned(), "storage: backend = \"etcd\" needs node_id"),
            (
                "backend = \"etcd\"\n".to_owned(),
                "storage: backend = \"etcd\" needs endpoints",
            ),
            (
                "node_id = \"web-1\"\n".to_owned(),
                "storage.node_id is only for backend = \"etcd\"",
            ),
            (
                format!("{etcd}node_id = \"a\"\ncert = \"c.pem\"\n"),
                "storage.cert and key go together: give both or neither",
            ),
        ];
        for (table, why) in refused {
            assert_eq!(storage(&table).unwrap_err(), why, "{table}");
        }
        let e = storage("backend = \"zookeeper\"\n").unwrap_err();
        assert!(
            e.contains("unknown variant `zookeeper`, expected `sled` or `etcd`"),
            "{e}"
        );
        let e = storage("nodeid = \"a\"\n").unwrap_err();
        assert!(e.contains("unknown field `nodeid`"), "{e}");
        // Config::read names the file.
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("node.toml");
        std::fs::write(&bad, format!("[storage]\n{etcd}node_id = \"\"\n")).unwrap();
        let e = Config::read(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("{}: storage.node_id", bad.display())),
            "{e}"
        );
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/keyvault.toml");
        let c = Config::read(&path).unwrap();
        assert_eq!(c.server_config().disk_high_water_percent, 80);
    }
}
