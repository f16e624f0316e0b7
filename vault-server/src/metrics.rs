//! Prometheus metrics: what handlers record. The exporter and `GET /metrics` are set up in
//! `metrics_route`.

/// Records one verify: its code and how long it took.
pub(crate) fn verify_observed(code: &'static str, seconds: f64) {
    metrics::counter!("keyvault_verifies_total", "code" => code).increment(1);
    metrics::histogram!("keyvault_verify_seconds").record(seconds);
}
