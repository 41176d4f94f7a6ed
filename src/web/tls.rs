//! HTTPS for the web server (`[http] tls`): the user's PEM certificate and
//! key, or a self-signed certificate made on first start (rcgen) and kept
//! in the state directory, so its fingerprint stays the same across
//! restarts and a browser told to trust it once keeps trusting it.

use crate::config::settings::HttpTls;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why HTTPS cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds no usable PEM certificate or key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The self-signed certificate cannot be made or kept.
    #[error("the self-signed certificate in {dir}: {what}")]
    SelfSigned {
        /// The state directory.
        dir: PathBuf,
        /// What failed.
        what: String,
    },
    /// rustls refused the certificate and key.
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(String),
}

/// A ready TLS configuration and what to tell the user about it.
pub struct Https {
    /// For the accept loop.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// SHA-256 of the leaf certificate, `AA:BB:…`.
    pub fingerprint: String,
    /// Where the certificate came from.
    pub source: PathBuf,
}

/// Where a self-signed certificate is kept: systemd's `$STATE_DIRECTORY`
/// (the unit's `StateDirectory=rtcam`), else `$XDG_STATE_HOME/rtcam` or
/// `~/.local/state/rtcam`.
pub fn state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may list several, separated by ':'.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        return PathBuf::from(first);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("rtcam");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/state/rtcam"),
        None => PathBuf::from("/var/lib/rtcam"),
    }
}

/// The TLS configuration `tls` asks for; `None` for plain HTTP. `names`
/// go into a new self-signed certificate (besides `localhost` and the
/// loopback addresses).
pub fn setup(tls: &HttpTls, dir: &Path, names: &[String]) -> Result<Option<Https>, TlsError> {
    let (cert_path, key_path) = match tls {
        HttpTls::Off => return Ok(None),
        HttpTls::Files { cert, key } => (cert.clone(), key.clone()),
        HttpTls::SelfSigned => self_signed(dir, names)?,
    };
    let certs = read_certs(&cert_path)?;
    let key = read_key(&key_path)?;
    let fingerprint = fingerprint(certs[0].as_ref());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Https {
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        fingerprint,
        source: cert_path,
    }))
}

/// `AA:BB:…`: the SHA-256 of a DER certificate, as browsers show it.
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no \"BEGIN CERTIFICATE\" block".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<rustls::pki_types::PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("not a PEM private key: {e}"),
        })?
        .ok_or_else(|| TlsError::Pem {
            path: path.to_path_buf(),
            what: "no PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
        })
}

/// The kept self-signed certificate and key, made first if there are none.
fn self_signed(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert = dir.join("https-cert.pem");
    let key = dir.join("https-key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let fail = |what: String| TlsError::SelfSigned {
        dir: dir.to_path_buf(),
        what,
    };
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    for n in names {
        if !sans.contains(n) {
            sans.push(n.clone());
        }
    }
    let made = rcgen::generate_simple_self_signed(sans).map_err(|e| fail(e.to_string()))?;
    create_private_dir(dir).map_err(|e| fail(format!("cannot create it: {e}")))?;
    // The key first and the certificate last, each written whole then
    // renamed: a crash leaves either both or no certificate, never a torn one.
    write_atomic(&key, made.signing_key.serialize_pem().as_bytes(), 0o600)
        .map_err(|e| fail(format!("cannot write {}: {e}", key.display())))?;
    write_atomic(&cert, made.cert.pem().as_bytes(), 0o644)
        .map_err(|e| fail(format!("cannot write {}: {e}", cert.display())))?;
    tracing::info!(dir = %dir.display(), "https: made a self-signed certificate");
    Ok((cert, key))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        let first = setup(&HttpTls::SelfSigned, &state, &["cam.lan".into()])
            .expect("made")
            .expect("on");
        let again = setup(&HttpTls::SelfSigned, &state, &[])
            .expect("kept")
            .expect("on");
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(state.join("https-key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key is private: {mode:o}");
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let dir = tempfile::tempdir().expect("temp dir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello").expect("written");
        let files = |cert: &Path, key: &Path| HttpTls::Files {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        let e = setup(&files(&junk, &junk), dir.path(), &[])
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("junk.pem") && e.to_string().contains("BEGIN CERTIFICATE"),
            "{e}"
        );
        let missing = dir.path().join("missing.pem");
        let e = setup(&files(&missing, &junk), dir.path(), &[])
            .err()
            .expect("refused");
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }

    #[test]
    fn off_is_plain_http() {
        assert!(
            setup(&HttpTls::Off, Path::new("/nonexistent"), &[])
                .expect("ok")
                .is_none()
        );
    }
}
