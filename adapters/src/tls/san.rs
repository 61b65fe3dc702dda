//! The `hedgerow://CLUSTER/NODE-ID` names in a certificate: a small DER
//! walk to the subject alternative name extension and its URIs. It reads
//! only what a peer's certificate says about itself; it never decides
//! whether to trust it (the verifier checks the chain first).
//!
//! Every length is checked against what is left of its input, so any
//! bytes at all give `None` or names, never a panic (a fuzz body holds it
//! to that).

/// The URI scheme of a node's name in its certificate.
pub const SCHEME: &str = "hedgerow://";

/// The name a node's certificate carries for `node` of `cluster`.
///
/// ```
/// assert_eq!(hedgerow::tls::node_uri("shop", "web-1"), "hedgerow://shop/web-1");
/// ```
pub fn node_uri(cluster: &str, node: &str) -> String {
    format!("{SCHEME}{cluster}/{node}")
}

/// Splits a `hedgerow://CLUSTER/NODE-ID` URI into cluster and node id
/// (the cluster is everything up to the first `/`), or `None` for any
/// other URI.
pub fn parse_node_uri(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix(SCHEME)?;
    let (cluster, node) = rest.split_once('/')?;
    (!cluster.is_empty() && !node.is_empty()).then_some((cluster, node))
}

/// The node ids a DER certificate names for `cluster`, in its order.
/// Empty if it names none (or the bytes are not a certificate).
pub fn node_ids_for(cert_der: &[u8], cluster: &str) -> Vec<String> {
    san_uris(cert_der)
        .unwrap_or_default()
        .iter()
        .filter_map(|u| parse_node_uri(u))
        .filter(|(c, _)| *c == cluster)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// Every URI in a DER certificate's subject alternative names, or `None`
/// if the bytes are not a certificate this walk understands.
pub fn san_uris(cert_der: &[u8]) -> Option<Vec<String>> {
    const SEQUENCE: u8 = 0x30;
    const EXTENSIONS: u8 = 0xa3; // [3] EXPLICIT in TBSCertificate
    const OID: u8 = 0x06;
    const BOOLEAN: u8 = 0x01;
    const OCTET_STRING: u8 = 0x04;
    const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11]; // 2.5.29.17
    const URI: u8 = 0x86; // GeneralName [6] IMPLICIT IA5String

    let (cert, _) = take(cert_der, SEQUENCE)?;
    let (mut tbs, _) = take(cert, SEQUENCE)?;
    // version, serial, signature, issuer, validity, subject, spki and
    // the optional unique ids come before the extensions: skip to them.
    let exts = loop {
        let (tag, body, rest) = any(tbs)?;
        if tag == EXTENSIONS {
            break body;
        }
        tbs = rest;
    };
    let (mut exts, _) = take(exts, SEQUENCE)?;
    while !exts.is_empty() {
        let (ext, rest) = take(exts, SEQUENCE)?;
        exts = rest;
        let (oid, mut ext) = take(ext, OID)?;
        if oid != SAN_OID {
            continue;
        }
        if ext.first() == Some(&BOOLEAN) {
            ext = take(ext, BOOLEAN)?.1;
        }
        let (value, _) = take(ext, OCTET_STRING)?;
        let (mut names, _) = take(value, SEQUENCE)?;
        let mut uris = Vec::new();
        while !names.is_empty() {
            let (tag, body, rest) = any(names)?;
            names = rest;
            if tag == URI {
                uris.push(std::str::from_utf8(body).ok()?.to_string());
            }
        }
        return Some(uris);
    }
    Some(Vec::new())
}

/// One element with tag `tag`: its body and what follows it.
fn take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = any(input)?;
    (t == tag).then_some((body, rest))
}

/// One element of any (single-byte) tag: tag, body, what follows.
fn any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, input) = input.split_first()?;
    let (len, input) = if first < 0x80 {
        (usize::from(first), input)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let (bytes, input) = input.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, input)
    };
    if input.len() < len {
        return None;
    }
    let (body, rest) = input.split_at(len);
    Some((tag, body, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_split_at_the_first_slash() {
        assert_eq!(parse_node_uri("hedgerow://c/n/x"), Some(("c", "n/x")));
        assert_eq!(parse_node_uri("hedgerow://c/"), None);
        assert_eq!(parse_node_uri("hedgerow:///n"), None);
        assert_eq!(parse_node_uri("https://c/n"), None);
    }

    #[test]
    fn truncated_input_is_not_a_certificate() {
        assert_eq!(san_uris(&[]), None);
        assert_eq!(san_uris(&[0x30, 0x82, 0xff]), None);
        assert_eq!(san_uris(&[0x30, 0x05, 0x30, 0x03, 0x02]), None);
    }
}
