//! Hands each ring-buffer record to the vhid it concerns.
//!
//! The program has one ring buffer for all vhids. A [`Router`] task waits on it and sends every
//! record to its vhid's channel: an advert by its vhid byte, an ARP claim or a held connection
//! request by the VIP it names. Each vhid's loop also [`Pump::pump`]s the ring itself before it
//! acts on a timer, so an advert that arrived before the timer fired is never found too late
//! because the router task had not run yet (after the process was stopped or starved, both
//! wake at once).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use cluster_common::{carp, xdp::ADVERT6_LEN};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::{XdpError, XdpEvent, XdpEvents};

/// Most records one pump routes, so a flood of held connection requests cannot keep a vhid's
/// loop from its own timers; the rest wait for the next pump.
const PUMP_MAX: usize = 4096;

struct Routes {
    events: XdpEvents,
    vhids: BTreeMap<u8, mpsc::UnboundedSender<XdpEvent>>,
    vips: BTreeMap<Ipv4Addr, u8>,
    /// Records that could not be read, or that concern no vhid we serve (one removed by a
    /// reload a moment ago).
    dropped: u64,
}

/// Shared access to the ring buffer, for the router task and every vhid's loop.
#[derive(Clone)]
pub struct Pump(Arc<Mutex<Routes>>);

impl Pump {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        // Held only to move records between queues, which leaves nothing half-done.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts routing records for `vhid` and its `vips`; they arrive on the returned receiver.
    pub fn add(&self, vhid: u8, vips: &[Ipv4Addr]) -> mpsc::UnboundedReceiver<XdpEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut routes = self.routes();
        routes.vhids.insert(vhid, tx);
        for vip in vips {
            routes.vips.insert(*vip, vhid);
        }
        rx
    }

    pub fn remove(&self, vhid: u8) {
        let mut routes = self.routes();
        routes.vhids.remove(&vhid);
        routes.vips.retain(|_, v| *v != vhid);
    }

    /// Records dropped so far because they were unreadable or concerned no vhid of ours.
    pub fn dropped(&self) -> u64 {
        self.routes().dropped
    }

    /// Routes the records already in the ring buffer; returns whether any are left.
    pub fn pump(&self) -> bool {
        let mut routes = self.routes();
        for _ in 0..PUMP_MAX {
            match routes.events.try_next() {
                Some(Ok(event)) => routes.route(event),
                Some(Err(error)) => {
                    routes.dropped += 1;
                    tracing::debug!(%error, "unreadable XDP record dropped");
                }
                None => return false,
            }
        }
        true
    }
}

impl Routes {
    fn route(&mut self, event: XdpEvent) {
        let vhid = match &event {
            XdpEvent::Advert { packet, .. } => Some(packet[carp::IPV4_HEADER_LEN + 1]),
            XdpEvent::Advert6 { packet, .. } => Some(packet[ADVERT6_LEN - carp::HEADER_LEN + 1]),
            XdpEvent::Conflict { ip, .. } => self.vips.get(ip).copied(),
            XdpEvent::Syn { packet, .. } => {
                let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
                self.vips.get(&dst).copied()
            }
        };
        let sent = vhid
            .and_then(|vhid| self.vhids.get(&vhid))
            .is_some_and(|tx| tx.send(event).is_ok());
        if !sent {
            self.dropped += 1;
        }
    }
}

/// The task that waits on the ring buffer.
pub struct Router {
    pump: Pump,
    ready: AsyncFd<OwnedFd>,
}

impl Router {
    /// Takes over the program's ring buffer; needs a tokio runtime.
    pub fn new(events: XdpEvents) -> Result<(Router, Pump), XdpError> {
        let fd = events.dup_fd().map_err(XdpError::Register)?;
        // SAFETY: the `AsyncFd` owns the duplicated descriptor, so it stays open and unchanged
        // for the whole registration.
        let ready = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|err| XdpError::Register(err.into_parts().1))?;
        let pump = Pump(Arc::new(Mutex::new(Routes {
            events,
            vhids: BTreeMap::new(),
            vips: BTreeMap::new(),
            dropped: 0,
        })));
        Ok((
            Router {
                pump: pump.clone(),
                ready,
            },
            pump,
        ))
    }

    /// Routes records as they come, for as long as the agent runs.
    pub async fn run(self) {
        loop {
            let mut guard = match self.ready.readable().await {
                Ok(guard) => guard,
                Err(error) => {
                    tracing::error!(%error, "waiting on the XDP ring buffer failed; adverts now arrive only when a timer fires");
                    return;
                }
            };
            if self.pump.pump() {
                // More than one pump's worth: let the vhids' loops run before the rest.
                tokio::task::yield_now().await;
            } else {
                guard.clear_ready();
            }
        }
    }
}
