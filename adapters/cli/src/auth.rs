//! The control API's bearer token: read from `--http-token-file`, asked
//! of every request as `Authorization: Bearer TOKEN` by one layer over
//! the whole router (so a route anyone adds is covered), except the
//! probes in [`OPEN_PATHS`]. A refusal is a bare 401: no body, nothing
//! about why. The comparison takes the same time wherever the bytes
//! differ.
//!
//! This file owns the token and the check; which routes exist is
//! `node`'s business.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// Paths answered without a token: the liveness and readiness probes a
/// kubelet calls without credentials.
pub const OPEN_PATHS: &[&str] = &["/v1/live", "/v1/ready"];

/// A bearer token, as read from its file.
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token in `path`: its contents with surrounding whitespace
    /// (a trailing newline) removed; at least 16 bytes.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read(path)
            .map_err(|e| format!("--http-token-file {}: {e}", path.display()))?;
        let token = text.trim_ascii();
        if token.len() < 16 {
            return Err(format!(
                "--http-token-file {}: the token must be at least 16 bytes (e.g. `head -c 32 \
                 /dev/urandom | base64 > FILE`)",
                path.display()
            ));
        }
        Ok(Token(token.to_vec()))
    }

    /// The header value a client sends.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", String::from_utf8_lossy(&self.0))
    }

    /// Whether `presented` is this token, in time that depends on the
    /// lengths only.
    fn matches(&self, presented: &[u8]) -> bool {
        let same_len = presented.len() == self.0.len();
        let diff = self
            .0
            .iter()
            .zip(presented.iter().chain(std::iter::repeat(&0)))
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // `|` not `&&`: no early exit on the length.
        (diff == 0) & same_len
    }
}

/// `routes` with the token asked of every request but [`OPEN_PATHS`];
/// unchanged without a token. Apply it last, to the finished router.
pub fn guard(routes: Router, token: Option<Arc<Token>>) -> Router {
    match token {
        Some(t) => routes.layer(middleware::from_fn_with_state(t, require)),
        None => routes,
    }
}

async fn require(State(token): State<Arc<Token>>, req: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(p) if token.matches(p) => next.run(req).await,
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_matches() {
        let t = Token(b"0123456789abcdef".to_vec());
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeF"));
        assert!(!t.matches(b"0123456789abcde"));
        assert!(!t.matches(b"0123456789abcdef0"));
        assert!(!t.matches(b""));
    }

    #[test]
    fn a_short_token_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("hedgerow-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("t");
        std::fs::write(&f, "short\n").unwrap();
        assert!(Token::from_file(&f).is_err());
        std::fs::write(&f, "0123456789abcdef\n").unwrap();
        assert!(Token::from_file(&f).unwrap().matches(b"0123456789abcdef"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
