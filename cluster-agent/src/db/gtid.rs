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

/// Per domain, the later of two positions (one GTID per domain, as MariaDB positions are).
pub fn furthest(a: &GtidList, b: &GtidList) -> GtidList {
    let mut by_domain: BTreeMap<u32, Gtid> = BTreeMap::new();
    for g in a.0.iter().chain(&b.0) {
        let e = by_domain.entry(g.domain).or_insert(*g);
        if g.seq > e.seq {
            *e = *g;
        }
    }
    GtidList(by_domain.into_values().collect())
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

/// Where a run of transactions came from: MariaDB's (domain, server id), or a MySQL source
/// UUID (with its tag, if any).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    MariaDb { domain: u32, server: u32 },
    MySql(String),
}

/// Everything a server holds, by origin: the transactions it logged or received. The failover
/// decisions compare these between nodes ("does the candidate hold every transaction that node
/// has?"), so the comparison must be exact per origin, not per domain: two nodes that both
/// reached sequence 100 of domain 0 through different masters hold different transactions.
///
/// MariaDB positions and states (`0-1-100,0-2-150`) mean, per origin, every transaction of that
/// origin up to the sequence number (strict mode keeps them in order); MySQL sets
/// (`uuid:1-5:7-9`) are read as the interval sets they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gtids(BTreeMap<Origin, Vec<(u64, u64)>>);

/// How one node's holdings compare with another's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compare {
    /// We hold everything they hold (anything else of theirs is superseded, see [`compare`]).
    Covers,
    /// They hold transactions we lack, and we hold nothing they lack: we can catch up from them.
    Behind { missing: Gtids },
    /// Each holds transactions the other lacks: neither can replicate from the other.
    Diverged {
        ours_only: Gtids,
        theirs_only: Gtids,
    },
}

impl Gtids {
    /// Parses `@@gtid_binlog_state`, a `Gtid_IO_Pos` or a MySQL GTID set; empty text is empty.
    pub fn parse(flavour: super::Flavour, text: &str) -> Result<Gtids, GtidParseError> {
        match flavour {
            super::Flavour::MariaDb => {
                let list: GtidList = text.parse()?;
                let mut g = Gtids::default();
                for x in list.0 {
                    g.insert(
                        Origin::MariaDb {
                            domain: x.domain,
                            server: x.server,
                        },
                        (1, x.seq),
                    );
                }
                Ok(g)
            }
            super::Flavour::MySql => parse_mysql(text),
        }
    }

    /// A MariaDB list (tests and the simulation build holdings this way).
    pub fn mariadb(text: &str) -> Gtids {
        Gtids::parse(super::Flavour::MariaDb, text).unwrap_or_default()
    }

    /// MariaDB holdings from (domain, server id, last sequence) triples.
    pub fn from_mariadb(last: impl IntoIterator<Item = (u32, u32, u64)>) -> Gtids {
        let mut g = Gtids::default();
        for (domain, server, seq) in last {
            g.insert(Origin::MariaDb { domain, server }, (1, seq));
        }
        g
    }

    fn insert(&mut self, origin: Origin, (lo, hi): (u64, u64)) {
        if lo > hi || hi == 0 {
            return;
        }
        let ranges = self.0.entry(origin).or_default();
        ranges.push((lo.max(1), hi));
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for &(a, b) in ranges.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *ranges = merged;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Everything either holds.
    pub fn union(&self, other: &Gtids) -> Gtids {
        let mut u = self.clone();
        for (o, rs) in &other.0 {
            for r in rs {
                u.insert(o.clone(), *r);
            }
        }
        u
    }

    /// What `other` holds and `self` lacks.
    pub fn missing(&self, other: &Gtids) -> Gtids {
        let mut out = Gtids::default();
        for (o, theirs) in &other.0 {
            let ours = self.0.get(o).map(Vec::as_slice).unwrap_or(&[]);
            for &(lo, hi) in theirs {
                // Subtract our ranges from [lo, hi].
                let mut start = lo;
                for &(a, b) in ours {
                    if b < start || a > hi {
                        continue;
                    }
                    if a > start {
                        out.insert(o.clone(), (start, a - 1));
                    }
                    start = b.saturating_add(1);
                    if start > hi {
                        break;
                    }
                }
                if start <= hi {
                    out.insert(o.clone(), (start, hi));
                }
            }
        }
        out
    }

    /// True when `self` holds everything `other` holds.
    pub fn covers(&self, other: &Gtids) -> bool {
        self.missing(other).is_empty()
    }

    /// The position to wait for until all of this is applied (`MASTER_GTID_WAIT` takes the
    /// last GTID of each domain; MySQL's `WAIT_FOR_EXECUTED_GTID_SET` the set itself).
    pub fn wait_position(&self) -> String {
        if self.0.keys().all(|o| matches!(o, Origin::MariaDb { .. })) {
            let mut last: BTreeMap<u32, Gtid> = BTreeMap::new();
            for (o, rs) in &self.0 {
                if let (Origin::MariaDb { domain, server }, Some(&(_, hi))) = (o, rs.last()) {
                    let e = last.entry(*domain).or_insert(Gtid {
                        domain: *domain,
                        server: *server,
                        seq: 0,
                    });
                    if hi > e.seq {
                        *e = Gtid {
                            domain: *domain,
                            server: *server,
                            seq: hi,
                        };
                    }
                }
            }
            GtidList(last.into_values().collect()).to_string()
        } else {
            self.to_string()
        }
    }
}

fn parse_mysql(text: &str) -> Result<Gtids, GtidParseError> {
    let bad = || GtidParseError(text.to_string());
    let mut g = Gtids::default();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut fields = part.split(':');
        let mut origin = fields.next().ok_or_else(bad)?.to_ascii_lowercase();
        for f in fields {
            let range = match f.split_once('-') {
                Some((a, b)) => a.parse().ok().zip(b.parse().ok()),
                None => f.parse().ok().map(|n| (n, n)),
            };
            match range {
                Some(r) => g.insert(Origin::MySql(origin.clone()), r),
                // A tag (MySQL 8.3+): the following ranges belong to uuid:tag.
                None if f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    origin = format!("{}:{f}", origin.split(':').next().unwrap_or(""))
                }
                None => return Err(bad()),
            }
        }
    }
    Ok(g)
}

impl fmt::Display for Gtids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (o, rs) in &self.0 {
            for &(lo, hi) in rs {
                if !first {
                    f.write_str(",")?;
                }
                first = false;
                match o {
                    Origin::MariaDb { domain, server } if lo == 1 => {
                        write!(f, "{domain}-{server}-{hi}")?
                    }
                    Origin::MariaDb { domain, server } => {
                        write!(f, "{domain}-{server}-{lo}..{hi}")?
                    }
                    Origin::MySql(u) if lo == hi => write!(f, "{u}:{lo}")?,
                    Origin::MySql(u) => write!(f, "{u}:{lo}-{hi}")?,
                }
            }
        }
        Ok(())
    }
}

/// Compares what we hold with what another node holds, exactly: a transaction only they hold
/// is one we lack, whoever wrote it and however old it is. (A node's leftovers from a lost
/// mastership are transactions too: nothing here can tell an unacknowledged leftover from an
/// acknowledged write, so deciding about them is left to an operator.)
pub fn compare(ours: &Gtids, theirs: &Gtids) -> Compare {
    let theirs_only = ours.missing(theirs);
    if theirs_only.is_empty() {
        return Compare::Covers;
    }
    let ours_only = theirs.missing(ours);
    if ours_only.is_empty() {
        Compare::Behind {
            missing: theirs_only,
        }
    } else {
        Compare::Diverged {
            ours_only,
            theirs_only,
        }
    }
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

    fn g(s: &str) -> Gtids {
        Gtids::mariadb(s)
    }

    #[test]
    fn holdings_compare_per_origin() {
        // A replica that received up to 120 of server 1 holds what the master logged up to 100.
        assert_eq!(compare(&g("0-1-120"), &g("0-1-100")), Compare::Covers);
        match compare(&g("0-1-90"), &g("0-1-100")) {
            Compare::Behind { missing } => assert_eq!(missing.to_string(), "0-1-91..100"),
            other => panic!("{other:?}"),
        }
        // Same domain, same sequence, different masters: different transactions.
        let d = compare(&g("0-1-100"), &g("0-2-100"));
        assert!(matches!(d, Compare::Diverged { .. }), "{d:?}");
        // An old master's unreplicated 101-103 are transactions the new master lacks, however
        // far its own history went on: nothing tells them from acknowledged writes.
        assert!(matches!(
            compare(&g("0-1-100,0-2-150"), &g("0-1-103")),
            Compare::Diverged { .. }
        ));
        assert_eq!(compare(&g(""), &g("")), Compare::Covers);
    }

    #[test]
    fn the_furthest_position_is_per_domain() {
        assert_eq!(
            furthest(&l("0-1-10,1-1-3"), &l("0-2-12")).to_string(),
            "0-2-12,1-1-3"
        );
        assert_eq!(furthest(&l(""), &l("0-1-5")).to_string(), "0-1-5");
    }

    #[test]
    fn missing_and_union_are_interval_arithmetic() {
        let a = g("0-1-100");
        let b = g("0-1-120,1-3-5");
        assert_eq!(a.missing(&b).to_string(), "0-1-101..120,1-3-5");
        assert!(a.union(&b).covers(&b));
        assert!(!a.covers(&b));
        assert_eq!(a.union(&b).wait_position(), "0-1-120,1-3-5");
        assert_eq!(g("0-1-100,0-2-150").wait_position(), "0-2-150");
    }

    #[test]
    fn mysql_sets_parse_as_intervals() {
        let f = crate::db::Flavour::MySql;
        let u = "3E11FA47-71CA-11E1-9E33-C80AA9429562";
        let a = Gtids::parse(f, &format!("{u}:1-5:7-9")).unwrap();
        let b = Gtids::parse(f, &format!("{u}:1-9")).unwrap();
        assert!(b.covers(&a));
        assert!(!a.covers(&b));
        assert_eq!(
            a.missing(&b).to_string(),
            format!("{}:6", u.to_ascii_lowercase())
        );
        assert!(matches!(compare(&a, &b), Compare::Behind { .. }));
        assert!(Gtids::parse(f, "uuid:x-y").is_err());
    }
}
