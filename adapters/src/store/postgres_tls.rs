//! TLS for the PostgreSQL store: libpq's `sslmode` and `sslrootcert`
//! taken out of the connection string (tokio-postgres knows only
//! `disable|prefer|require` and no root file), and the rustls client
//! configuration each mode means, on the ring provider the cluster port
//! uses. This room reads the CA file; it never opens a connection and
//! never sees the password.
//!
//! The modes mean what they mean to libpq: `disable` never encrypts,
//! `prefer` (the default) encrypts when the server offers it and
//! `require` always, neither checking the certificate (unless `require`
//! is given a root file, which makes it `verify-ca`, as in libpq);
//! `verify-ca` checks that the certificate chains to `sslrootcert`, and
//! `verify-full` also that it names the host connected to.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_rustls::rustls;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// How the store protects its connection (libpq's `sslmode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, \
                     verify-full"
                ))
            }
        })
    }

    /// The mode as the connection string spells it.
    pub(super) fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// The mode tokio-postgres negotiates with: whether TLS is tried and
    /// whether its absence is an error.
    pub(super) fn negotiation(self) -> tokio_postgres::config::SslMode {
        match self {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }
}

/// The TLS options of a connection string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TlsOptions {
    pub(super) mode: SslMode,
    pub(super) root_cert: Option<PathBuf>,
}

/// `config` without `sslmode` and `sslrootcert`, for tokio-postgres, and
/// those two options. Both forms are understood: `key=value …` (values
/// possibly quoted) and `postgresql://…?key=value&…`.
pub(super) fn split_options(config: &str) -> Result<(String, TlsOptions), String> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<bool, String> {
        match key {
            "sslmode" => mode = Some(SslMode::parse(value)?),
            "sslrootcert" => root_cert = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    };
    let rest = if config.starts_with("postgres://") || config.starts_with("postgresql://") {
        match config.split_once('?') {
            None => config.to_string(),
            Some((base, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&') {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    if !take(&percent_decode(key)?, &percent_decode(value)?)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, value) in key_values(config)? {
            if !take(&key, &value)? {
                kept.push(format!(
                    "{key}='{}'",
                    value.replace('\\', "\\\\").replace('\'', "\\'")
                ));
            }
        }
        kept.join(" ")
    };
    let mut mode = mode.unwrap_or(SslMode::Prefer);
    if mode == SslMode::Require && root_cert.is_some() {
        mode = SslMode::VerifyCa;
    }
    Ok((rest, TlsOptions { mode, root_cert }))
}

/// The `key=value` pairs of a libpq keyword/value string: whitespace
/// around `=` allowed, values in single quotes with `\` escapes.
fn key_values(config: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = config.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("expected = after {key:?}"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(format!("the value of {key} has no closing quote")),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// The rustls client configuration `options` call for.
pub(super) fn client_config(options: &TlsOptions) -> Result<ClientConfig, String> {
    let provider = crate::tls::crypto_provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (options.mode, &options.root_cert) {
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(format!(
                "sslmode={} needs sslrootcert=PATH, a PEM file with the CA that signed the \
                 server's certificate",
                options.mode.name()
            ))
        }
        (SslMode::VerifyCa | SslMode::VerifyFull, Some(path)) => {
            let roots = Arc::new(read_roots(path)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| format!("sslrootcert={}: {e}", path.display()))?;
            if options.mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(Lenient {
                    chain: Some(webpki),
                    algorithms: provider.signature_verification_algorithms,
                })
            }
        }
        _ => Arc::new(Lenient {
            chain: None,
            algorithms: provider.signature_verification_algorithms,
        }),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let at = format!("sslrootcert={}", path.display());
    let pem = std::fs::read(path).map_err(|e| format!("{at}: cannot read it: {e}"))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{at}: not PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("{at}: not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{at}: holds no certificate"));
    }
    Ok(roots)
}

/// `verify-ca` (the chain is checked, the name is not) and `prefer` or
/// `require` (nothing is checked: encryption against a passive listener,
/// libpq's meaning of these modes). The handshake signature is checked
/// either way, so the session is with the holder of the certificate shown.
#[derive(Debug)]
struct Lenient {
    /// The chain check, for `verify-ca`.
    chain: Option<Arc<WebPkiServerVerifier>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The rustls error under a failed connection, if TLS is what failed.
pub(super) fn tls_failure<'e>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An io::Error hides what it wraps from `source`.
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> (String, TlsOptions) {
        split_options(s).unwrap()
    }

    #[test]
    fn key_value_strings_lose_the_tls_options_and_keep_the_rest() {
        let (rest, tls) = split(
            "host=db port = 5433 sslmode=verify-full sslrootcert='/etc/pg ca/root.pem' \
             options='-c a=\\'b\\''",
        );
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/pg ca/root.pem")));
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_ports(), &[5433]);
        assert_eq!(parsed.get_options(), Some("-c a='b'"));
    }

    #[test]
    fn urls_lose_the_tls_options_and_keep_the_rest() {
        let (rest, tls) = split(
            "postgresql://app@db/leases?sslmode=verify-ca&sslrootcert=%2Fca.pem&connect_timeout=3",
        );
        assert_eq!(rest, "postgresql://app@db/leases?connect_timeout=3");
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/ca.pem")));
        let (rest, tls) = split("postgres://app@db/leases?sslmode=disable");
        assert_eq!(rest, "postgres://app@db/leases");
        assert_eq!(tls.mode, SslMode::Disable);
    }

    #[test]
    fn the_default_is_prefer_and_require_with_a_root_checks_the_chain() {
        assert_eq!(split("host=db").1.mode, SslMode::Prefer);
        assert_eq!(split("host=db sslmode=require").1.mode, SslMode::Require);
        assert_eq!(
            split("host=db sslmode=require sslrootcert=ca.pem").1.mode,
            SslMode::VerifyCa
        );
    }

    #[test]
    fn an_unknown_mode_and_a_missing_root_are_clear_errors() {
        let err = split_options("host=db sslmode=allow").unwrap_err();
        assert!(
            err.contains("sslmode=allow") && err.contains("verify-full"),
            "{err}"
        );
        let (_, tls) = split("host=db sslmode=verify-full");
        let err = client_config(&tls).unwrap_err();
        assert!(err.contains("needs sslrootcert"), "{err}");
        let (_, tls) = split("host=db sslmode=verify-full sslrootcert=/nonexistent/ca.pem");
        let err = client_config(&tls).unwrap_err();
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("cannot read"),
            "{err}"
        );
    }

    #[test]
    fn an_unterminated_quote_is_an_error() {
        assert!(split_options("host='db").is_err());
    }
}
