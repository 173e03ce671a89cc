//! TLS for the front door (rustls through pingora): certificates that can
//! be replaced while running.
//!
//! Each HTTPS listener gets a [`ReloadableCert`], a rustls certificate
//! resolver whose key pair sits behind an `ArcSwap`. A reload re-reads the
//! PEM files; if they do not parse, the running certificate stays and the
//! error is logged. Handshakes already in progress finish with the
//! certificate they started with.

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The key does not fit a supported signature scheme.
    #[error("{path}: unsupported private key: {message}")]
    Key {
        /// The key file.
        path: String,
        /// rustls's reason.
        message: String,
    },
}

/// Read a certificate chain and its private key (PEM) into a rustls key
/// pair, using the ring crypto provider.
///
/// # Errors
/// [`TlsError`] naming the file at fault.
pub fn load(cert_path: &str, key_path: &str) -> Result<CertifiedKey, TlsError> {
    let file_err = |path: &str, message: String| TlsError::File {
        path: path.to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| file_err(cert_path, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(cert_path, "no certificate found".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key_path).map_err(|e| file_err(key_path, e.to_string()))?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::Key {
            path: key_path.to_string(),
            message: e.to_string(),
        })?;
    Ok(CertifiedKey::new(chain, signer))
}

/// A certificate resolver whose key pair can be swapped while serving.
#[derive(Debug)]
pub struct ReloadableCert {
    cert_path: String,
    key_path: String,
    current: ArcSwap<CertifiedKey>,
}

impl ReloadableCert {
    /// Load the files once.
    ///
    /// # Errors
    /// [`TlsError`] when they cannot be loaded.
    pub fn new(cert_path: &str, key_path: &str) -> Result<Arc<ReloadableCert>, TlsError> {
        let key = load(cert_path, key_path)?;
        Ok(Arc::new(ReloadableCert {
            cert_path: cert_path.to_string(),
            key_path: key_path.to_string(),
            current: ArcSwap::from_pointee(key),
        }))
    }

    /// Re-read the files; on failure keep the running certificate.
    ///
    /// # Errors
    /// [`TlsError`] when the new files cannot be loaded.
    pub fn reload(&self) -> Result<(), TlsError> {
        let key = load(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(key));
        Ok(())
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_reload_and_keep_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, cn: &str| {
            let c = rcgen::generate_simple_self_signed(vec![cn.to_string()]).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), c.cert.pem()).unwrap();
            std::fs::write(
                dir.path().join(format!("{name}.key")),
                c.key_pair.serialize_pem(),
            )
            .unwrap();
            c.cert.der().to_vec()
        };
        let first = write("site", "one.test");
        let p = |f: &str| dir.path().join(f).display().to_string();
        let r = ReloadableCert::new(&p("site.pem"), &p("site.key")).unwrap();
        assert_eq!(r.current.load().cert[0].as_ref(), first.as_slice());
        let second = write("site", "two.test");
        r.reload().unwrap();
        assert_eq!(r.current.load().cert[0].as_ref(), second.as_slice());
        std::fs::write(dir.path().join("site.pem"), "garbage").unwrap();
        assert!(r.reload().is_err());
        assert_eq!(r.current.load().cert[0].as_ref(), second.as_slice(), "kept");
        assert!(ReloadableCert::new(&p("missing.pem"), &p("site.key")).is_err());
    }
}
