//! What the SQL stores share: the mapping between a lease row and its
//! columns. Unsigned 64-bit values travel bit-for-bit through the signed
//! 64-bit columns; everything read back is validated, so a damaged or
//! foreign row becomes a `StoreError::Corrupt` and never a panic.

use hedgerow_core::{NodeId, Term, MAX_ADDR_LEN};

use super::{Holder, LeaseRow, LeaseWrite, StoreError, LEASE_SCHEMA_VERSION};

/// Column list in the order [`RawRow`] is read, for `SELECT`s.
pub(crate) const COLUMNS: &str =
    "schema_version, holder_id, holder_nonce, holder_addr, token, expires_ns, version";

/// An unsigned value as the signed column stores it (same bits).
pub(crate) fn to_sql(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The unsigned value a signed column holds (same bits).
pub(crate) fn from_sql(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// A row's columns as read, before validation.
pub(crate) struct RawRow {
    pub(crate) schema_version: i64,
    pub(crate) holder_id: Option<String>,
    pub(crate) holder_nonce: Option<i64>,
    pub(crate) holder_addr: Option<String>,
    pub(crate) token: i64,
    pub(crate) expires_ns: i64,
    pub(crate) version: i64,
}

impl RawRow {
    /// The lease row, or `Corrupt` saying what is wrong with it and where.
    pub(crate) fn decode(self, store: &str, group: &str) -> Result<LeaseRow, StoreError> {
        let corrupt = |what: String| {
            StoreError::Corrupt(format!(
                "{store}: the lease row of group {group:?} in table hedgerow_lease {what}"
            ))
        };
        if self.schema_version != i64::from(LEASE_SCHEMA_VERSION) {
            return Err(corrupt(format!(
                "has schema version {}, and this build of hedgerow reads only version \
                 {LEASE_SCHEMA_VERSION}; run the same hedgerow version on every node of the \
                 group, or move this group to a new name",
                self.schema_version
            )));
        }
        let holder = match (self.holder_id, self.holder_nonce, self.holder_addr) {
            (None, None, None) => None,
            (Some(id), Some(nonce), Some(addr)) => {
                let id = NodeId::new(id.as_str()).map_err(|why| {
                    corrupt(format!(
                        "names holder {id:?}, which is not a node id: {why}"
                    ))
                })?;
                if addr.len() > MAX_ADDR_LEN {
                    return Err(corrupt(format!(
                        "has a holder address of {} bytes (at most {MAX_ADDR_LEN})",
                        addr.len()
                    )));
                }
                Some(Holder {
                    id,
                    nonce: from_sql(nonce),
                    addr,
                })
            }
            _ => {
                return Err(corrupt(
                    "has only some of holder_id, holder_nonce, holder_addr set; \
                     all three or none must be"
                        .into(),
                ))
            }
        };
        Ok(LeaseRow {
            holder,
            token: Term(from_sql(self.token)),
            expires_ns: from_sql(self.expires_ns),
            version: from_sql(self.version),
        })
    }
}

/// A write's columns, ready to bind.
pub(crate) struct RawWrite<'a> {
    pub(crate) holder_id: Option<&'a str>,
    pub(crate) holder_nonce: Option<i64>,
    pub(crate) holder_addr: Option<&'a str>,
    pub(crate) token: i64,
    pub(crate) expires_ns: i64,
}

impl<'a> RawWrite<'a> {
    pub(crate) fn new(write: &'a LeaseWrite) -> Self {
        let holder = write.holder.as_ref();
        RawWrite {
            holder_id: holder.map(|h| h.id.as_str()),
            holder_nonce: holder.map(|h| to_sql(h.nonce)),
            holder_addr: holder.map(|h| h.addr.as_str()),
            token: to_sql(write.token.0),
            expires_ns: to_sql(write.expires_ns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_values_survive_the_signed_column() {
        for v in [
            0,
            1,
            i64::MAX as u64,
            (i64::MAX as u64) + 1,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(from_sql(to_sql(v)), v);
        }
        assert_eq!(to_sql(u64::MAX), -1);
    }

    fn raw() -> RawRow {
        RawRow {
            schema_version: i64::from(LEASE_SCHEMA_VERSION),
            holder_id: Some("node-a".into()),
            holder_nonce: Some(-1),
            holder_addr: Some("10.0.0.1:7000".into()),
            token: -1,
            expires_ns: 5,
            version: 7,
        }
    }

    #[test]
    fn a_good_row_decodes() {
        let row = raw().decode("test", "g");
        let holder = row.as_ref().ok().and_then(|r| r.holder.clone());
        assert_eq!(holder.map(|h| h.nonce), Some(u64::MAX));
        assert_eq!(row.map(|r| (r.token, r.version)), Ok((Term(u64::MAX), 7)));
    }

    #[test]
    fn a_foreign_schema_version_is_refused_with_advice() {
        let mut r = raw();
        r.schema_version = 2;
        match r.decode("test", "g") {
            Err(StoreError::Corrupt(why)) => {
                assert!(why.contains("schema version 2"), "{why}");
                assert!(why.contains("same hedgerow version"), "{why}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn damaged_holders_are_refused_not_misread() {
        let mut partial = raw();
        partial.holder_addr = None;
        assert!(matches!(
            partial.decode("t", "g"),
            Err(StoreError::Corrupt(_))
        ));
        let mut bad_id = raw();
        bad_id.holder_id = Some(String::new());
        assert!(matches!(
            bad_id.decode("t", "g"),
            Err(StoreError::Corrupt(_))
        ));
        let mut long_addr = raw();
        long_addr.holder_addr = Some("x".repeat(MAX_ADDR_LEN + 1));
        assert!(matches!(
            long_addr.decode("t", "g"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
