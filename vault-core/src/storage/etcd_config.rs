//! Where a cluster node finds its etcd: the `[storage]` settings of DESIGN section 10 as typed
//! values (endpoints, the vault's prefix, the node's id, client TLS files).
//!
//! Plain data with no etcd client behind it, so that a configuration is parsed and checked in
//! every build, also one without the `etcd` feature that could not serve it.

use std::fmt;
use std::path::PathBuf;

/// A node's id: stable, unique in its cluster, `[a-z0-9-]{1,32}` (it names the node's audit
/// log origin and its keys in etcd).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(String);

/// Why a text is not a [`NodeId`] or an [`EtcdConfig`] is incomplete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterConfigError {
    /// A node id outside `[a-z0-9-]{1,32}`.
    #[error("node_id must be 1 to 32 characters of a-z, 0-9 and '-' (got {0} characters{1})")]
    NodeId(usize, &'static str),
    /// No endpoint, or one that is not an `http://` or `https://` URL.
    #[error("endpoints: {0}")]
    Endpoints(String),
    /// A prefix that is empty or holds characters other than printable ASCII.
    #[error(
        "prefix must be 1 to 128 printable ASCII characters without spaces (one vault per prefix)"
    )]
    Prefix,
    /// Client TLS files that do not go together.
    #[error("{0}")]
    Tls(String),
}

impl NodeId {
    /// The longest node id.
    pub const MAX_LEN: usize = 32;

    /// `text` as a node id, if it is `[a-z0-9-]{1,32}`.
    pub fn parse(text: &str) -> Result<NodeId, ClusterConfigError> {
        let len = text.chars().count();
        if len == 0 || len > NodeId::MAX_LEN {
            return Err(ClusterConfigError::NodeId(len, ""));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ClusterConfigError::NodeId(len, ", some not allowed"));
        }
        Ok(NodeId(text.to_owned()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Client certificate files for etcd (PEM): the CA that signed the members' certificates, and
/// this node's certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA certificate that the members' certificates must chain to.
    pub ca_cert: PathBuf,
    /// This node's client certificate and its key, which etcd requires when it checks clients.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// How to reach the etcd cluster that holds a vault's shared state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Member URLs (`http://127.0.0.1:2379`); requests move to the next when one fails.
    pub endpoints: Vec<String>,
    /// Every key of the vault starts with this and `/`: one vault per prefix.
    pub prefix: String,
    /// This node's id.
    pub node_id: NodeId,
    /// Client TLS, for `https://` endpoints.
    pub tls: Option<EtcdTls>,
}

impl EtcdConfig {
    /// A configuration from its parts as a config file names them, checked: at least one
    /// endpoint, every one `http://` or `https://` (all alike), `https://` only with a
    /// `ca_cert`, `cert` and `key` together, a printable prefix.
    pub fn new(
        endpoints: Vec<String>,
        prefix: &str,
        node_id: NodeId,
        ca_cert: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> Result<EtcdConfig, ClusterConfigError> {
        if endpoints.is_empty() {
            return Err(ClusterConfigError::Endpoints(
                "give at least one etcd member URL".into(),
            ));
        }
        let https = endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if let Some(bad) = endpoints
            .iter()
            .find(|e| !(e.starts_with("http://") || e.starts_with("https://")) || e.len() > 256)
        {
            return Err(ClusterConfigError::Endpoints(format!(
                "`{}` is not an http:// or https:// URL",
                bad.chars().take(64).collect::<String>()
            )));
        }
        if https != 0 && https != endpoints.len() {
            return Err(ClusterConfigError::Endpoints(
                "do not mix http:// and https:// members".into(),
            ));
        }
        if prefix.is_empty() || prefix.len() > 128 || !prefix.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ClusterConfigError::Prefix);
        }
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(ClusterConfigError::Tls(
                    "cert and key go together: give both or neither".into(),
                ));
            }
        };
        let tls = match (ca_cert, identity) {
            (Some(ca_cert), identity) => Some(EtcdTls { ca_cert, identity }),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ClusterConfigError::Tls(
                    "cert and key need ca_cert, the CA of the etcd members".into(),
                ));
            }
        };
        if https != 0 && tls.is_none() {
            return Err(ClusterConfigError::Tls(
                "https:// endpoints need ca_cert (and cert and key, if etcd checks clients)".into(),
            ));
        }
        if https == 0 && tls.is_some() {
            return Err(ClusterConfigError::Tls(
                "ca_cert, cert and key are for https:// endpoints".into(),
            ));
        }
        Ok(EtcdConfig {
            endpoints,
            prefix: prefix.to_owned(),
            node_id,
            tls,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_is_1_to_32_of_lowercase_letters_digits_and_dashes() {
        for good in ["a", "node-1", "0", &"x".repeat(32)] {
            assert_eq!(NodeId::parse(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "Node",
            "node_1",
            "node 1",
            "nöde",
            &"x".repeat(33),
            "a/b",
        ] {
            let e = NodeId::parse(bad).unwrap_err();
            assert!(e.to_string().starts_with("node_id must be"), "{bad}: {e}");
        }
    }

    fn node() -> NodeId {
        NodeId::parse("n1").unwrap()
    }

    fn config(
        endpoints: &[&str],
        prefix: &str,
        files: [Option<&str>; 3],
    ) -> Result<EtcdConfig, ClusterConfigError> {
        let [ca, cert, key] = files.map(|f| f.map(PathBuf::from));
        let endpoints = endpoints.iter().map(|e| e.to_string()).collect();
        EtcdConfig::new(endpoints, prefix, node(), ca, cert, key)
    }

    #[test]
    fn a_config_is_refused_with_the_reason() {
        let http = ["http://127.0.0.1:2379", "http://127.0.0.1:2380"];
        assert!(config(&http, "/vaults/photos", [None; 3]).is_ok());
        /// Endpoints, prefix, the ca_cert, cert and key files, and what the error must say.
        type Case<'a> = (&'a [&'a str], &'a str, [Option<&'a str>; 3], &'a str);
        let cases: [Case; 8] = [
            (&[], "p", [None; 3], "at least one"),
            (&["127.0.0.1:2379"], "p", [None; 3], "not an http"),
            (&["http://a", "https://b"], "p", [None; 3], "do not mix"),
            (&http, "", [None; 3], "prefix"),
            (&http, "two words", [None; 3], "prefix"),
            (&http, "p", [Some("ca"), Some("c"), None], "go together"),
            (&["https://a"], "p", [None; 3], "need ca_cert"),
            (&http, "p", [Some("ca"), None, None], "for https://"),
        ];
        for (endpoints, prefix, files, why) in cases {
            let e = config(endpoints, prefix, files).unwrap_err().to_string();
            assert!(e.contains(why), "{endpoints:?} {prefix:?}: {e}");
        }
        let tls = config(&["https://a"], "p", [Some("ca"), Some("c"), Some("k")]).unwrap();
        assert_eq!(
            tls.tls.unwrap().identity,
            Some((PathBuf::from("c"), PathBuf::from("k")))
        );
    }
}
