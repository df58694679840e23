//! MariaDB GTID lists (`domain-server-seq,...`): parsing, and the two questions the agent asks
//! of them: has this node applied everything it received, and does it hold transactions the
//! new master lacks (errant transactions, which must stop a rejoin rather than diverge).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// One MariaDB GTID: `domain-server-seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
}

impl fmt::Display for Gtid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MariaDB GTID list (domain-server-seq, comma separated)")]
pub struct GtidParseError(pub String);

impl FromStr for Gtid {
    type Err = GtidParseError;

    fn from_str(s: &str) -> Result<Gtid, GtidParseError> {
        let bad = || GtidParseError(s.to_string());
        let mut it = s.trim().splitn(3, '-');
        let domain = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let server = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let seq = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        Ok(Gtid {
            domain,
            server,
            seq,
        })
    }
}

/// A GTID list as MariaDB prints it (`@@gtid_binlog_state`, `@@gtid_slave_pos`, the
/// `Gtid_IO_Pos` of `SHOW SLAVE STATUS`). Empty string: empty list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GtidList(pub Vec<Gtid>);

impl FromStr for GtidList {
    type Err = GtidParseError;

    fn from_str(s: &str) -> Result<GtidList, GtidParseError> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().map_err(|_| GtidParseError(s.to_string())))
            .collect::<Result<Vec<_>, _>>()
            .map(GtidList)
    }
}

impl fmt::Display for GtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{g}")?;
        }
        Ok(())
    }
}

impl GtidList {
    /// Highest sequence number per domain.
    fn by_domain(&self) -> BTreeMap<u32, u64> {
        let mut m = BTreeMap::new();
        for g in &self.0 {
            let e = m.entry(g.domain).or_insert(0);
            *e = (*e).max(g.seq);
        }
        m
    }

    /// Highest sequence number per (domain, server).
    fn by_origin(&self) -> BTreeMap<(u32, u32), u64> {
        let mut m = BTreeMap::new();
        for g in &self.0 {
            let e = m.entry((g.domain, g.server)).or_insert(0);
            *e = (*e).max(g.seq);
        }
        m
    }

    /// True when this position has reached `other` in every domain of `other`: with strict
    /// mode sequence numbers grow within a domain, so "applied up to" is a per-domain maximum.
    pub fn covers(&self, other: &GtidList) -> bool {
        let mine = self.by_domain();
        other
            .by_domain()
            .iter()
            .all(|(d, seq)| mine.get(d).is_some_and(|m| m >= seq))
    }
}

/// A run of transactions the local server holds and the master does not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Errant {
    /// The local server's last GTID of this origin (domain and server id).
    pub local: Gtid,
    /// The master's last GTID of the same origin, if it has any.
    pub master_seq: Option<u64>,
}

impl fmt::Display for Errant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.master_seq {
            Some(m) => write!(
                f,
                "{}-{}-{}..{}",
                self.local.domain,
                self.local.server,
                m + 1,
                self.local.seq
            ),
            None => write!(
                f,
                "{}-{}-..{}",
                self.local.domain, self.local.server, self.local.seq
            ),
        }
    }
}

/// Transactions in the local `gtid_binlog_state` that the master's `gtid_binlog_state` lacks.
///
/// Both states keep the last GTID of every (domain, server id) ever logged, so a local origin
/// whose last sequence number is beyond the master's of the same origin (or an origin the
/// master never saw) is a transaction written here and never replicated there: a rejoin from
/// the master's position would lose it or, in strict mode, stop on it.
pub fn errant(local_state: &GtidList, master_state: &GtidList) -> Vec<Errant> {
    let master = master_state.by_origin();
    local_state
        .by_origin()
        .into_iter()
        .filter_map(|((domain, server), seq)| {
            let m = master.get(&(domain, server)).copied();
            (m.is_none_or(|m| seq > m)).then_some(Errant {
                local: Gtid {
                    domain,
                    server,
                    seq,
                },
                master_seq: m,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> GtidList {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_lists() {
        assert_eq!(l(""), GtidList::default());
        let x = l("0-1-100, 1-2-5");
        assert_eq!(x.0.len(), 2);
        assert_eq!(x.to_string(), "0-1-100,1-2-5");
        assert!("0-1".parse::<GtidList>().is_err());
        assert!("a-1-2".parse::<GtidList>().is_err());
    }

    #[test]
    fn covers_is_per_domain() {
        assert!(l("0-2-150").covers(&l("0-1-100")));
        assert!(l("0-1-100").covers(&l("0-1-100")));
        assert!(!l("0-1-99").covers(&l("0-1-100")));
        assert!(!l("0-1-200").covers(&l("0-1-100,1-1-1")));
        assert!(l("0-1-1").covers(&l("")));
    }

    #[test]
    fn no_errant_when_the_master_has_everything() {
        // The old master wrote up to 100; the new master replicated it and wrote on.
        assert!(errant(&l("0-1-100"), &l("0-1-100,0-2-150")).is_empty());
        // A lagging replica is behind, not errant.
        assert!(errant(&l("0-1-90"), &l("0-1-100")).is_empty());
        assert!(errant(&l(""), &l("0-1-100")).is_empty());
    }

    #[test]
    fn finds_writes_the_master_never_saw() {
        // Cut off, the old master (server 1) wrote 101-103 while server 2 took over.
        let e = errant(&l("0-1-103"), &l("0-1-100,0-2-150"));
        assert_eq!(
            e,
            vec![Errant {
                local: Gtid {
                    domain: 0,
                    server: 1,
                    seq: 103
                },
                master_seq: Some(100)
            }]
        );
        assert_eq!(e[0].to_string(), "0-1-101..103");
        // An origin the master has never seen at all.
        let e = errant(&l("0-1-100,0-3-7"), &l("0-1-100"));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].to_string(), "0-3-..7");
    }
}
