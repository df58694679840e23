//! What a configuration reload (SIGHUP, `cluster-agent reload`) may change while the agent
//! runs.
//!
//! The election's timing and preference, the scripts and the unicast peers apply at once and
//! cause no transition of their own. What the running sockets, the XDP program, the database
//! tasks or the checks were built from needs a restart, and a reload that changes it is
//! refused as a whole, so the agent never runs half of a new configuration.
//!
//! With several vhids, a vhid missing from the new file bows out and a new one starts as
//! BACKUP; each vhid present in both is compared on its own.

use std::net::IpAddr;

use crate::config::{ConfigError, Delivery, Settings, VipAddr};
use crate::xdp::XdpMode;

/// Why a reloaded configuration was not applied; the running one stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("{0} cannot change while the agent runs: restart it to apply the new value")]
    NeedsRestart(&'static str),
    #[error("vhid {0} is still bowing out after the last reload: reload again once it has gone")]
    StillLeaving(u8),
}

/// What a reload does to the running vhids.
#[derive(Debug, Default)]
pub struct Plan {
    /// Vhids that stay, with their new settings and what changed (only those that changed).
    pub keep: Vec<(Settings, Vec<&'static str>)>,
    /// Vhids to start.
    pub add: Vec<Settings>,
    /// Vhids to stop.
    pub remove: Vec<u8>,
}

/// Matches the new vhids with the running ones by id. Refuses the whole reload when a kept
/// vhid changed something fixed, when an added vhid would need what only a start builds (a
/// control socket, metrics endpoint or XDP mode of its own, an interface the XDP program is
/// not attached to, a VIP that moves to another vhid), or when the vhid that carries the
/// database would come or go.
pub fn plan(
    running: &[Settings],
    leaving: &[Settings],
    new: Vec<Settings>,
) -> Result<Plan, ReloadError> {
    let mut plan = Plan::default();
    // A vhid still bowing out holds its vhid and VIP until it has gone.
    if let Some(l) = leaving.iter().find(|l| {
        new.iter()
            .any(|n| n.vhid == l.vhid || n.vips.iter().any(|v| l.owns(v.addr)))
    }) {
        return Err(ReloadError::StillLeaving(l.vhid));
    }
    let Some(first) = running.first() else {
        return Ok(plan);
    };
    for r in running {
        if !new.iter().any(|n| n.vhid == r.vhid) {
            if r.db.is_some() {
                return Err(ReloadError::NeedsRestart("mysql"));
            }
            plan.remove.push(r.vhid);
        }
    }
    for n in new {
        match running.iter().find(|r| r.vhid == n.vhid) {
            Some(r) => {
                let changed = changes(r, &n)?;
                if !changed.is_empty() {
                    plan.keep.push((n, changed));
                }
            }
            None => {
                let added = [
                    ("mysql", n.db.is_none() && n.quorum.is_none()),
                    (
                        "interface",
                        n.xdp == XdpMode::Off || running.iter().any(|r| r.interface == n.interface),
                    ),
                ];
                if let Some((name, _)) = agent_wide(first, &n)
                    .into_iter()
                    .chain(added)
                    .find(|(_, same)| !same)
                {
                    return Err(ReloadError::NeedsRestart(name));
                }
                // The leaving vhid's VIP is still its own until its bow-out completes.
                if running
                    .iter()
                    .any(|r| n.vips.iter().any(|v| r.owns(v.addr)))
                {
                    return Err(ReloadError::NeedsRestart("vhid"));
                }
                plan.add.push(n);
            }
        }
    }
    Ok(plan)
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

/// What the agent as a whole was started with: the same for every vhid, kept or added.
fn agent_wide(running: &Settings, new: &Settings) -> [(&'static str, bool); 4] {
    [
        (
            "control-socket",
            running.control_socket == new.control_socket,
        ),
        ("control-group", running.control_group == new.control_group),
        ("metrics", running.metrics == new.metrics),
        ("xdp", running.xdp == new.xdp),
    ]
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
        ("addr", sorted(&running.vips) == sorted(&new.vips)),
        ("nomcast or mcastip", same_kind),
        (
            "ignoreifstate",
            running.ignore_ifstate == new.ignore_ifstate,
        ),
        ("no-fence", running.fence == new.fence),
        ("track", running.tracks == new.tracks),
        ("mysql", same_db),
        ("quorum", running.quorum == new.quorum),
    ];
    match agent_wide(running, new)
        .into_iter()
        .chain(checks)
        .find(|(_, same)| !same)
    {
        Some((name, _)) => Err(ReloadError::NeedsRestart(name)),
        None => Ok(()),
    }
}

/// The order addresses are listed in means nothing to the program or the kernel.
fn sorted(vips: &[VipAddr]) -> Vec<(IpAddr, u8)> {
    let mut all: Vec<_> = vips.iter().map(|v| (v.addr, v.prefix)).collect();
    all.sort_unstable();
    all
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
            addr: vec!["10.0.0.100/24".into()],
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
        assert_eq!(refused(|a| a.addr = vec!["10.0.0.101/24".into()]), "addr");
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

    fn vhid(id: u32, addr: &str) -> Settings {
        settings(|a| {
            a.vhid = Some(id);
            a.addr = vec![addr.into()];
        })
    }

    #[test]
    fn a_plan_keeps_changed_vhids_stops_missing_ones_and_starts_new_ones() {
        let running = [vhid(1, "10.0.0.101/24"), vhid(2, "10.0.0.102/24")];
        let mut kept = vhid(1, "10.0.0.101/24");
        kept.advskew = 50;
        let plan = plan(&running, &[], vec![kept, vhid(3, "10.0.0.103/24")]).unwrap();
        assert_eq!(
            plan.keep
                .iter()
                .map(|(s, changed)| (s.vhid, changed.clone()))
                .collect::<Vec<_>>(),
            [(1, vec!["advskew"])]
        );
        assert_eq!(plan.remove, [2]);
        assert_eq!(plan.add.iter().map(|s| s.vhid).collect::<Vec<_>>(), [3]);
        // Nothing changed: nothing to do.
        let plan = plan_of(&running, running.to_vec());
        assert!(plan.keep.is_empty() && plan.add.is_empty() && plan.remove.is_empty());
    }

    fn plan_of(running: &[Settings], new: Vec<Settings>) -> Plan {
        plan(running, &[], new).unwrap()
    }

    #[test]
    fn a_plan_refuses_what_only_a_start_builds() {
        let running = [vhid(1, "10.0.0.101/24")];
        let refused = |new: Settings| match plan(&running, &[], vec![running[0].clone(), new]) {
            Err(ReloadError::NeedsRestart(name)) => name,
            other => panic!("not refused: {other:?}"),
        };
        let mut other_if = vhid(2, "10.0.0.102/24");
        other_if.interface = "eth1".into();
        assert_eq!(refused(other_if.clone()), "interface");
        // Without XDP a new interface only needs sockets of its own.
        other_if.xdp = XdpMode::Off;
        let mut running_off = running[0].clone();
        running_off.xdp = XdpMode::Off;
        assert!(plan(&[running_off.clone()], &[], vec![running_off, other_if]).is_ok());
        let mut metrics = vhid(2, "10.0.0.102/24");
        metrics.metrics = Some("127.0.0.1:9".parse().unwrap());
        assert_eq!(refused(metrics), "metrics");
        // A kept vhid is held to `changes`.
        // A VIP that moves to another vhid.
        assert_eq!(refused(vhid(2, "10.0.0.101/24")), "vhid");
        let mut moved = running[0].clone();
        moved.vips[0].addr = Ipv4Addr::new(10, 0, 0, 109).into();
        assert!(matches!(
            plan(&running, &[], vec![moved]),
            Err(ReloadError::NeedsRestart("addr"))
        ));
        // One more address for a kept vhid is a new message to authenticate: a restart.
        let mut more = running[0].clone();
        more.vips.push(VipAddr {
            addr: Ipv4Addr::new(10, 0, 0, 110).into(),
            prefix: 24,
        });
        assert!(matches!(
            plan(&running, &[], vec![more.clone()]),
            Err(ReloadError::NeedsRestart("addr"))
        ));
        // The same addresses in another order are the same vhid.
        more.vips.reverse();
        assert!(
            plan(
                &[more.clone()],
                &[],
                vec![{
                    let mut again = more.clone();
                    again.vips.reverse();
                    again
                }]
            )
            .is_ok()
        );
        // An added vhid may not take an address a running vhid holds as its second.
        let mut second = vhid(3, "10.0.0.120/24");
        second.vips.push(VipAddr {
            addr: Ipv4Addr::new(10, 0, 0, 110).into(),
            prefix: 24,
        });
        assert!(matches!(
            plan(&[more.clone()], &[], vec![more, second]),
            Err(ReloadError::NeedsRestart("vhid"))
        ));
    }

    #[test]
    fn a_vhid_still_bowing_out_cannot_come_back_yet() {
        let running = [vhid(1, "10.0.0.101/24")];
        let leaving = [vhid(2, "10.0.0.102/24")];
        for back in [vhid(2, "10.0.0.103/24"), vhid(3, "10.0.0.102/24")] {
            assert!(matches!(
                plan(&running, &leaving, vec![running[0].clone(), back]),
                Err(ReloadError::StillLeaving(2))
            ));
        }
        assert!(plan(&running, &leaving, vec![running[0].clone()]).is_ok());
    }
}
