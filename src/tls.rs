//! The one TLS client configuration of the network destinations: rustls with the *ring*
//! crypto provider and the platform's certificate verifier.
//!
//! The Umami destination (reqwest) and the NATS client (async-nats) share it, so the crate
//! compiles one crypto library (ring, which async-nats needs anyway) instead of ring and
//! aws-lc. The verifier is what reqwest's default `rustls` feature uses:
//! `rustls-platform-verifier`, i.e. the operating system's trust store and its checks.

use std::sync::Arc;

use rustls::ClientConfig;

/// A client configuration with the ring provider, rustls's safe default protocol versions,
/// the platform verifier and no client certificate. Callers set their ALPN protocols.
pub(crate) fn client_config() -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| format!("cannot set up TLS certificate verification: {e}"))?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The provider [`client_config`] uses (for tests comparing against it).
#[cfg(test)]
fn ring() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_config_builds_on_ring() {
        let config = client_config().unwrap();
        let ours: Vec<_> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let ring: Vec<_> = super::ring()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours, ring);
        // ring's key exchange groups, by name (aws-lc's default list starts with a
        // post-quantum hybrid that ring does not have).
        let groups: Vec<_> = config
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        let ring_groups: Vec<_> = super::ring().kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(groups, ring_groups);
    }
}
