//! TLS on the client listener: loads the PEM certificate chain and private key
//! named by `[server.tls]` and builds the rustls acceptor (ring provider,
//! ALPN `h2` then `http/1.1`, TLS 1.2 and 1.3).
//!
//! This module owns certificate files and TLS settings. It must never look at
//! HTTP: after the handshake the connection is served exactly like a plain one.
//!
//! The acceptor in force is swappable ([`Live`]): a reload (SIGHUP, or the
//! `[reload] watch` seeing the files change) re-reads the same
//! files (a rotated certificate, as cert-manager writes it) and new
//! handshakes use the new one; a file that no longer loads leaves the old
//! acceptor in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why the certificate or key cannot be used; `key` is the config key
/// (`cert` or `key`) whose file is at fault.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TlsError {
    pub key: &'static str,
    pub path: PathBuf,
    pub message: String,
}

/// The acceptor in force and the files it was read from.
#[derive(Clone)]
pub struct Live {
    cfg: TlsConfig,
    current: Arc<arc_swap::ArcSwap<TlsAcceptor>>,
}

impl Live {
    /// Read `cfg`'s files; fails like [`acceptor`].
    pub fn new(cfg: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Self {
            cfg: cfg.clone(),
            current: Arc::new(arc_swap::ArcSwap::from_pointee(acceptor(cfg)?)),
        })
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> Arc<TlsAcceptor> {
        self.current.load_full()
    }

    /// Read the files again and use them from the next handshake on; on
    /// error the acceptor in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.current.store(Arc::new(acceptor(&self.cfg)?));
        Ok(())
    }
}

/// Build the acceptor for `cfg`, reading both files.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let fail = |key: &'static str, path: &Path, message: String| TlsError {
        key,
        path: path.to_owned(),
        message,
    };
    let read = |key: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| fail(key, path, format!("cannot read: {e}")))
    };

    let cert_pem = read("cert", &cfg.cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail("cert", &cfg.cert, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            "cert",
            &cfg.cert,
            "no PEM `CERTIFICATE` block found".into(),
        ));
    }

    let key_pem = read("key", &cfg.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let message = match e {
            pem::Error::NoItemsFound => {
                "no PEM private key block found (PKCS#8, PKCS#1 or SEC1)".to_owned()
            }
            e => format!("not a valid PEM private key: {e}"),
        };
        fail("key", &cfg.key, message)
    })?;

    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("cert", &cfg.cert, e.to_string()))?
        .with_no_client_auth()
        // Also checks that the key belongs to the leaf certificate.
        .with_single_cert(certs, key)
        .map_err(|e| {
            fail(
                "key",
                &cfg.key,
                format!(
                    "unusable with the certificate in {}: {e}",
                    cfg.cert.display()
                ),
            )
        })?;
    // h2 first: browsers only multiplex EventSource streams over HTTP/2.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
