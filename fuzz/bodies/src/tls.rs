//! The handshake path with TLS in front: arbitrary bytes as everything a
//! peer sends to a node with TLS on, and to one with TLS off.
//!
//! * TLS on: no input gets a peer past the TLS handshake (a valid client
//!   certificate's signature over this connection's transcript cannot be
//!   in fixed bytes); an input whose first byte is not a TLS record is
//!   answered with a plain `Refuse` frame that says TLS is required.
//! * TLS off: an input starting with a TLS record byte (0x16) is refused
//!   with a plain `Refuse` frame; any other non-empty input goes on to
//!   the hello.
//! * The certificate name parser never panics on the bytes.

use std::sync::OnceLock;

use hedgerow::tls::{san_uris, ClusterCa};
use hedgerow::FuzzAcceptor;
use hedgerow::Tls;
use hedgerow_core::wire::{decode_frame, Frame};

fn acceptors() -> &'static (FuzzAcceptor, FuzzAcceptor) {
    static ACCEPTORS: OnceLock<(FuzzAcceptor, FuzzAcceptor)> = OnceLock::new();
    ACCEPTORS.get_or_init(|| {
        let ca = ClusterCa::new("fuzz").expect("a CA");
        let node = ca.node("n1").expect("a node certificate");
        let tls = Tls::from_pem(ca.cert_pem(), node.cert_pem, node.key_pem);
        let on = FuzzAcceptor::new(Some((tls, "fuzz", "n1"))).expect("TLS material loads");
        let off = FuzzAcceptor::new(None).expect("a plaintext acceptor");
        (on, off)
    })
}

fn refusal(written: &[u8]) -> Option<String> {
    match decode_frame(written, 1 << 20) {
        Ok(Some((Frame::Refuse(why), _))) => Some(why),
        _ => None,
    }
}

/// The `tls` fuzz target's body.
pub fn tls(data: &[u8]) {
    let _ = san_uris(data);
    let (on, off) = acceptors();
    let starts_tls = data.first() == Some(&0x16);

    let (accepted, written) = on.feed(data);
    assert!(!accepted, "fixed bytes got through a mutual TLS handshake");
    if !data.is_empty() && !starts_tls {
        let why = refusal(&written).expect("a plaintext peer is told why");
        assert!(why.contains("requires mutual TLS"), "{why}");
    }

    let (accepted, written) = off.feed(data);
    match data.first() {
        None => assert!(!accepted),
        Some(0x16) => {
            assert!(!accepted, "a TLS hello at a plaintext node went on");
            let why = refusal(&written).expect("a TLS peer is told why");
            assert!(why.contains("TLS off"), "{why}");
        }
        Some(_) => assert!(
            accepted && written.is_empty(),
            "plaintext goes on to the hello"
        ),
    }
}
