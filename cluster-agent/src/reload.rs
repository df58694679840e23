//! What a configuration reload (SIGHUP, `cluster-agent reload`) may change while the agent
//! runs.
//!
//! The election's timing and preference, the scripts and the unicast peers apply at once and
//! cause no transition of their own. What the running sockets, the XDP program, the database
//! tasks or the checks were built from needs a restart, and a reload that changes it is
//! refused as a whole, so the agent never runs half of a new configuration.

use crate::config::{ConfigError, Delivery, Settings};

/// Why a reloaded configuration was not applied; the running one stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("{0} cannot change while the agent runs: restart it to apply the new value")]
    NeedsRestart(&'static str),
}

/// The settings that differ between `running` and `new`, by name, once every one of them is
/// known to be one a running agent can take. Refuses the reload otherwise, naming the first
/// fixed setting that changed.
pub fn changes(running: &Settings, new: &Settings) -> Result<Vec<&'static str>, ReloadError> {
    fixed(running, new)?;
    let live = [
        ("advbase", running.advbase != new.advbase),
        ("advskew", running.advskew != new.advskew),
        ("deadratio", running.deadratio != new.deadratio),
        ("preempt", running.preempt != new.preempt),
        ("garp-interval", running.garp_interval != new.garp_interval),
        ("upscript", running.upscript != new.upscript),
        ("downscript", running.downscript != new.downscript),
        ("xparam", running.xparam != new.xparam),
        ("hook-timeout", running.hook_timeout != new.hook_timeout),
        ("shutdown", running.shutdown_hook != new.shutdown_hook),
        ("peer", running.delivery != new.delivery),
    ];
    Ok(live
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect())
}

fn fixed(running: &Settings, new: &Settings) -> Result<(), ReloadError> {
    let same_kind = matches!(
        (&running.delivery, &new.delivery),
        (Delivery::Unicast(_), Delivery::Unicast(_))
    ) || running.delivery == new.delivery;
    // The database's host check follows the timers; the running tasks keep theirs (it only
    // matters in fast mode, and stays within 10-50 ms).
    let same_db = match (&running.db, &new.db) {
        (Some(a), Some(b)) => {
            let mut b = b.clone();
            b.db.host_check = a.db.host_check;
            *a == b
        }
        (a, b) => a.is_none() && b.is_none(),
    };
    let checks = [
        ("interface", running.interface == new.interface),
        ("srcip", running.src == new.src),
        ("vhid", running.vhid == new.vhid),
        ("pass", running.password == new.password),
        (
            "addr",
            (running.vip, running.prefix) == (new.vip, new.prefix),
        ),
        ("nomcast or mcastip", same_kind),
        (
            "ignoreifstate",
            running.ignore_ifstate == new.ignore_ifstate,
        ),
        ("xdp", running.xdp == new.xdp),
        ("no-fence", running.fence == new.fence),
        (
            "control-socket",
            running.control_socket == new.control_socket,
        ),
        ("control-group", running.control_group == new.control_group),
        ("metrics", running.metrics == new.metrics),
        ("track", running.tracks == new.tracks),
        ("mysql", same_db),
        ("quorum", running.quorum == new.quorum),
    ];
    match checks.into_iter().find(|(_, same)| !same) {
        Some((name, _)) => Err(ReloadError::NeedsRestart(name)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunArgs;
    use std::net::Ipv4Addr;

    fn settings(f: impl FnOnce(&mut RunArgs)) -> Settings {
        let mut a = RunArgs {
            interface: Some("eth0".into()),
            srcip: Some("10.0.0.1".into()),
            vhid: Some(7),
            pass: Some("pw".into()),
            addr: Some("10.0.0.100/24".into()),
            ..RunArgs::default()
        };
        f(&mut a);
        a.validate(|_| Some(3)).unwrap()
    }

    #[test]
    fn timers_skews_scripts_and_peers_apply_live() {
        let running = settings(|a| a.peers = vec!["10.0.0.2".into()]);
        assert_eq!(
            changes(&running, &running.clone()).unwrap(),
            Vec::<&str>::new()
        );
        let new = settings(|a| {
            a.advbase = Some(2);
            a.advskew = Some(40);
            a.deadratio = Some(4);
            a.preempt = true;
            a.garp_interval = Some(10);
            a.upscript = Some("/bin/true".into());
            a.hook_timeout = Some(5);
            a.peers = vec!["10.0.0.2".into(), "10.0.0.3".into()];
        });
        assert_eq!(
            changes(&running, &new).unwrap(),
            [
                "advbase",
                "advskew",
                "deadratio",
                "preempt",
                "garp-interval",
                "upscript",
                "hook-timeout",
                "peer"
            ]
        );
    }

    #[test]
    fn what_the_running_agent_was_built_from_needs_a_restart() {
        let running = settings(|_| {});
        let refused = |f: fn(&mut RunArgs)| match changes(&running, &settings(f)) {
            Err(ReloadError::NeedsRestart(name)) => name,
            other => panic!("not refused: {other:?}"),
        };
        assert_eq!(refused(|a| a.vhid = Some(8)), "vhid");
        assert_eq!(refused(|a| a.srcip = Some("10.0.0.9".into())), "srcip");
        assert_eq!(refused(|a| a.pass = Some("other".into())), "pass");
        assert_eq!(refused(|a| a.addr = Some("10.0.0.101/24".into())), "addr");
        assert_eq!(refused(|a| a.nomcast = true), "nomcast or mcastip");
        assert_eq!(
            refused(|a| a.peers = vec!["10.0.0.2".into()]),
            "nomcast or mcastip"
        );
        assert_eq!(
            refused(|a| a.metrics = Some("127.0.0.1:9".parse().unwrap())),
            "metrics"
        );
        let s = settings(|a| a.mcastip = Some("224.0.0.19".into()));
        assert_eq!(
            s.delivery,
            Delivery::Multicast(Ipv4Addr::new(224, 0, 0, 19))
        );
        assert!(matches!(
            changes(&running, &s),
            Err(ReloadError::NeedsRestart("nomcast or mcastip"))
        ));
    }
}
