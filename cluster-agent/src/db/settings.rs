//! Server settings that an acknowledged write's survival rests on. `db bootstrap` writes them,
//! but a server started from an older or hand-made configuration can run without them and then
//! lose a write its client was told had committed, with nothing else to show for it. The agent
//! reads them and names each one that differs, in `status` and in its log.

/// One setting, the value it must have, and what goes wrong without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub name: &'static str,
    pub value: &'static str,
    pub otherwise: &'static str,
}

/// MariaDB's settings, in the order [`select`] reads them.
pub const WANTED: [Wanted; 4] = [
    Wanted {
        name: "innodb_flush_log_at_trx_commit",
        value: "3",
        otherwise: "InnoDB leaves commits to be redone from the binary log after a crash, and recovery as a replica removes them instead: a write acknowledged just before a crash can be lost",
    },
    Wanted {
        name: "sync_binlog",
        value: "1",
        otherwise: "a commit is acknowledged before its binary log is on disk",
    },
    Wanted {
        name: "sync_relay_log",
        value: "1",
        otherwise: "a replica acknowledges transactions that are not yet on its disk",
    },
    Wanted {
        name: "rpl_semi_sync_master_wait_point",
        value: "AFTER_SYNC",
        otherwise: "other sessions see a commit before any replica has it",
    },
];

/// Reads every setting of [`WANTED`] in one row.
pub fn select() -> String {
    let columns: Vec<String> = WANTED.iter().map(|w| format!("@@{}", w.name)).collect();
    format!("SELECT {}", columns.join(", "))
}

/// Each setting whose value (as read by [`select`]) is not the wanted one, described for an
/// operator; empty when all are as wanted.
pub fn deviations(values: &[Option<String>]) -> Vec<String> {
    WANTED
        .iter()
        .zip(
            values
                .iter()
                .map(Option::as_deref)
                .chain(std::iter::repeat(None)),
        )
        .filter(|(w, v)| !v.is_some_and(|v| v.eq_ignore_ascii_case(w.value)))
        .map(|(w, v)| {
            format!(
                "{} = {} (want {}: otherwise {})",
                w.name,
                v.unwrap_or("unset"),
                w.value,
                w.otherwise
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn bootstrap_settings_pass() {
        assert!(deviations(&some(&["3", "1", "1", "after_sync"])).is_empty());
    }

    #[test]
    fn each_unsafe_setting_is_named_with_its_consequence() {
        let found = deviations(&some(&["1", "1", "0", "AFTER_COMMIT"]));
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("innodb_flush_log_at_trx_commit = 1 (want 3"));
        assert!(found[1].starts_with("sync_relay_log = 0 (want 1"));
        assert!(found[2].contains("AFTER_COMMIT"));
    }

    #[test]
    fn a_missing_value_counts_as_unsafe() {
        let found = deviations(&[Some("3".into()), None]);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].starts_with("sync_binlog = unset"));
    }

    #[test]
    fn the_select_reads_every_setting_in_order() {
        assert_eq!(
            select(),
            "SELECT @@innodb_flush_log_at_trx_commit, @@sync_binlog, @@sync_relay_log, @@rpl_semi_sync_master_wait_point"
        );
    }
}
