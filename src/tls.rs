//! TLS for `wss://`: the certificate and key from PEM files, loaded at start and again on
//! `Server::reload_tls`, and the rustls acceptor every shard shares. Not the encrypted streams
//! themselves: each connection's task drives its own (`shard/io.rs`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use futures_rustls::TlsAcceptor;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::Error;

/// Where the server's certificate chain and private key are: PEM files, read at start and
/// on every `Server::reload_tls` (the binary: on SIGHUP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    cert: PathBuf,
    key: PathBuf,
}

impl TlsConfig {
    /// `cert`: the certificate chain, leaf first; `key`: its private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub fn from_pem_files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig {
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// The loaded TLS state shared by the shards.
pub(crate) struct Tls {
    files: TlsConfig,
    provider: Arc<CryptoProvider>,
    current: Arc<CurrentKey>,
    pub(crate) acceptor: TlsAcceptor,
}

impl Tls {
    /// Reads the files and builds the acceptor; a missing, unreadable or mismatched file is
    /// `Error::Config` naming it.
    pub(crate) fn load(files: TlsConfig) -> Result<Tls, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = certified_key(&files, &provider)?;
        let current = Arc::new(CurrentKey(RwLock::new(Arc::new(key))));
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        // A WebSocket upgrade is HTTP/1.1; a client offering h2 too is told so.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Resumption by ticket rather than by rustls' default session cache, which holds 256
        // sessions behind one lock that every shard's handshakes would take. A ticket keeps
        // the session's state with the client, sealed with a key all shards share (rotated
        // every 6 hours), so any number of clients can come back on any shard and skip the
        // certificate's signature.
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| Error::Config(format!("TLS tickets: {e}")))?;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        Ok(Tls {
            files,
            provider,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again; new handshakes use the new certificate, open connections keep
    /// theirs. On an error the old certificate stays in use.
    pub(crate) fn reload(&self) -> Result<(), Error> {
        let key = certified_key(&self.files, &self.provider)?;
        match self.current.0.write() {
            Ok(mut current) => *current = Arc::new(key),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(key),
        }
        Ok(())
    }
}

fn certified_key(files: &TlsConfig, provider: &CryptoProvider) -> Result<CertifiedKey, Error> {
    let named =
        |path: &Path, what: String| Error::Config(format!("TLS {}: {what}", path.display()));
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| named(&files.cert, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(named(&files.cert, "no certificate in the file".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| named(&files.key, e.to_string()))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| named(&files.key, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| named(&files.key, format!("does not match the certificate: {e}")))?;
    Ok(certified)
}

/// The certificate handed to each new handshake; `reload` swaps it.
struct CurrentKey(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentKey {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match self.0.read() {
            Ok(key) => Some(Arc::clone(&key)),
            Err(poisoned) => Some(Arc::clone(&poisoned.into_inner())),
        }
    }
}

impl fmt::Debug for CurrentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentKey")
    }
}
