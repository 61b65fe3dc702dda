//! The blocking client of a node's control API, as the demo polls it,
//! `hedgerow kv` asks it and the black-box tests drive it: one request,
//! an overall timeout, the status and the body back whatever the status
//! (an error answer is still an answer), over plain HTTP or, to a node
//! started with `--http-tls on`, over TLS trusting the cluster's CA.
//! HTTP and TLS are `ureq`'s (on hedgerow's rustls); this module only
//! shapes the call.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig, TlsProvider};

/// Largest answer body read (a `/metrics` page or a KV listing is far
/// smaller).
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// Sends `method path` with `body` to `addr` (plain HTTP) and returns the
/// status code and the body. `GET`, `HEAD` and `DELETE` send no body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    request_with(addr, method, path, body, timeout, None)
}

/// [`request`] with an `Authorization` header (a node's
/// `--http-token-file`; see [`crate::auth::Token::header_value`]).
pub fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
    authorization: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    request_to(
        &addr.to_string(),
        None,
        method,
        path,
        body,
        timeout,
        authorization,
    )
}

/// The CA a control API's certificate must chain to when it is served
/// over TLS (`hedgerow node --http-tls on`): the cluster's `ca.pem`.
#[derive(Clone)]
pub struct HttpsTrust {
    roots: Arc<Vec<Certificate<'static>>>,
}

impl std::fmt::Debug for HttpsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsTrust")
            .field("certificates", &self.roots.len())
            .finish()
    }
}

impl HttpsTrust {
    /// The certificates in a PEM bundle; at least one.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let mut roots = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item.map_err(|e| e.to_string())? {
                PemItem::Certificate(c) => roots.push(c),
                _ => continue,
            }
        }
        if roots.is_empty() {
            return Err("no CERTIFICATE block".into());
        }
        Ok(HttpsTrust {
            roots: Arc::new(roots),
        })
    }

    /// [`HttpsTrust::from_pem`] of a file, with the path in the error.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Sends `method path` to `authority` (`HOST:PORT`): over TLS when
/// `trust` is given (the certificate must chain to it and name `HOST`,
/// a DNS name or an IP address, as any HTTPS client checks), else plain
/// HTTP.
pub fn request_to(
    authority: &str,
    trust: Option<&HttpsTrust>,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
    authorization: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let scheme = if trust.is_some() { "https" } else { "http" };
    let url = &format!("{scheme}://{authority}{path}");
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_idle_connections(0);
    if let Some(trust) = trust {
        config = config.tls_config(
            TlsConfig::builder()
                .provider(TlsProvider::Rustls)
                .root_certs(RootCerts::Specific(trust.roots.clone()))
                .unversioned_rustls_crypto_provider(hedgerow::tls::crypto_provider())
                .build(),
        );
    }
    let agent: ureq::Agent = config.build().into();
    let auth = |r: ureq::RequestBuilder<ureq::typestate::WithoutBody>| match authorization {
        Some(a) => r.header("Authorization", a),
        None => r,
    };
    let auth_body = |r: ureq::RequestBuilder<ureq::typestate::WithBody>| match authorization {
        Some(a) => r.header("Authorization", a),
        None => r,
    };
    let answer = match method {
        "GET" => auth(agent.get(url)).call(),
        "HEAD" => auth(agent.head(url)).call(),
        "DELETE" => auth(agent.delete(url)).call(),
        "POST" => auth_body(agent.post(url)).send(body),
        "PUT" => auth_body(agent.put(url)).send(body),
        "PATCH" => auth_body(agent.patch(url)).send(body),
        other => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("unsupported HTTP method {other}"),
            ))
        }
    };
    let mut answer = answer.map_err(into_io)?;
    let status = answer.status().as_u16();
    let body = answer
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(into_io)?;
    Ok((status, body))
}

fn into_io(e: ureq::Error) -> std::io::Error {
    match e {
        ureq::Error::Io(e) => e,
        ureq::Error::Timeout(_) => std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string()),
        e => std::io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    /// A server that answers one connection with `response`.
    fn serve_once(response: &'static [u8]) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(response);
        });
        addr
    }

    #[test]
    fn an_error_status_comes_back_with_its_body() {
        let addr = serve_once(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        );
        let got = request(addr, "GET", "/v1/status", b"", Duration::from_secs(5)).unwrap();
        assert_eq!(got, (503, b"{}".to_vec()));
    }

    #[test]
    fn nobody_listening_and_odd_methods_are_errors() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(request(addr, "GET", "/", b"", Duration::from_secs(2)).is_err());
        let err = request(addr, "BREW", "/", b"", Duration::from_secs(2)).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}
