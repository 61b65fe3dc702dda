//! The address peers dial, as `--advertise` gives it: `HOST:PORT` as is,
//! or `:PORT` (as hedge accepts), which takes the host from this
//! machine's interfaces, so a pod can advertise its own IP without the
//! downward API. It owns only that choice; it never binds or dials.

use std::net::IpAddr;

/// `spec` as peers will dial it: `:PORT` becomes `IP:PORT` with this
/// machine's address (see [`pick`]); anything else is returned as is.
pub(crate) fn resolve(spec: &str) -> Result<String, String> {
    let Some(port) = spec.strip_prefix(':') else {
        return Ok(spec.to_owned());
    };
    port.parse::<u16>()
        .map_err(|_| format!("--advertise {spec}: expected HOST:PORT or :PORT"))?;
    let interfaces = if_addrs::get_if_addrs()
        .map_err(|e| format!("--advertise {spec}: cannot list this machine's interfaces: {e}"))?;
    let ip = pick(interfaces.iter().map(|i| i.ip())).ok_or_else(|| {
        format!(
            "--advertise {spec}: this machine has no non-loopback address to advertise; give \
             --advertise HOST:PORT (e.g. the pod IP from the downward API)"
        )
    })?;
    Ok(match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    })
}

/// The address to advertise among `addrs`: the first IPv4 address that is
/// neither loopback, unspecified nor link-local (a pod has one, its pod
/// IP), else the first such IPv6 address (an IPv6-only cluster); `None`
/// when there is none, e.g. a network namespace with only `lo`.
pub(crate) fn pick(addrs: impl IntoIterator<Item = IpAddr>) -> Option<IpAddr> {
    let usable: Vec<IpAddr> = addrs.into_iter().filter(is_dialable).collect();
    usable
        .iter()
        .find(|ip| ip.is_ipv4())
        .or_else(|| usable.first())
        .copied()
}

fn is_dialable(ip: &IpAddr) -> bool {
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local(),
        // fe80::/10: valid on one link only, and needs a scope id to dial.
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn the_first_routable_ipv4_address_wins_then_ipv6() {
        let all = ips(&[
            "127.0.0.1",
            "::1",
            "fe80::1",
            "169.254.1.2",
            "fd00::5",
            "10.1.2.3",
        ]);
        assert_eq!(pick(all), Some("10.1.2.3".parse().unwrap()));
        let v6 = ips(&["127.0.0.1", "fe80::1", "fd00::5"]);
        assert_eq!(pick(v6), Some("fd00::5".parse().unwrap()));
        assert_eq!(pick(ips(&["127.0.0.1", "::1", "fe80::9"])), None);
    }

    #[test]
    fn host_and_port_stay_as_given_and_a_bad_port_is_named() {
        assert_eq!(resolve("10.0.0.5:7946").unwrap(), "10.0.0.5:7946");
        assert_eq!(resolve("web-1.svc:7946").unwrap(), "web-1.svc:7946");
        let err = resolve(":http").unwrap_err();
        assert!(err.contains("expected HOST:PORT or :PORT"), "{err}");
    }

    /// `:PORT` takes this machine's own address: the one `pick` chooses
    /// among its interfaces, never a loopback one; with none, an error
    /// that says what to give instead.
    #[test]
    fn a_bare_port_resolves_to_an_address_of_this_machine() {
        let mine: Vec<IpAddr> = if_addrs::get_if_addrs()
            .unwrap()
            .iter()
            .map(|i| i.ip())
            .collect();
        match pick(mine.clone()) {
            Some(ip) => {
                let got = resolve(":7946").unwrap();
                let addr: std::net::SocketAddr = got.parse().unwrap();
                assert_eq!(addr.ip(), ip);
                assert_eq!(addr.port(), 7946);
                assert!(!ip.is_loopback() && mine.contains(&ip), "{got}");
            }
            None => {
                let err = resolve(":7946").unwrap_err();
                assert!(err.contains("no non-loopback address"), "{err}");
            }
        }
    }
}
