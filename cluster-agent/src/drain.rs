//! The drain before a planned switchover: while XDP drops new connection requests to the
//! VIP, the connections already open on it are counted until none is left, so that the VIP
//! moves between two requests instead of in the middle of one.
//!
//! The count comes from the kernel's tables of TCP sockets in this network namespace
//! (`/proc/net/tcp`, and `/proc/net/tcp6` for services listening on `::`, where connections
//! to the VIP appear as IPv4-mapped addresses): it covers every service behind the VIP, the
//! database and a web server alike, and needs nothing from them.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tokio::sync::mpsc;

/// How often the table is read while draining.
const LOOK_EVERY: Duration = Duration::from_millis(1);

/// The tables read, IPv4 and IPv6.
const TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

/// An address as these tables print it: 32-bit words in hex, each in host byte order.
fn parse_addr(hex: &str) -> Option<Ipv4Addr> {
    let word = |i: usize| {
        hex.get(i * 8..i * 8 + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            .map(u32::to_ne_bytes)
    };
    match hex.len() {
        8 => word(0).map(Ipv4Addr::from),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Ipv6Addr::from(bytes).to_ipv4_mapped()
        }
        _ => None,
    }
}

/// Connections on any of `vips` that are open or being opened, in the text of `/proc/net/tcp` or
/// `/proc/net/tcp6`. Closing ones (the client has sent its FIN, or ours is out) are not
/// waited for: their exchange is over.
pub fn open_on(table: &str, vips: &[Ipv4Addr]) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let (Some(_slot), Some(local), Some(_remote), Some(state)) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return false;
            };
            let addr = local.split_once(':').and_then(|(a, _)| parse_addr(a));
            // 01 ESTABLISHED, 03 SYN_RECV.
            addr.is_some_and(|a| vips.contains(&a)) && matches!(state, "01" | "03")
        })
        .count()
}

/// Reads the tables every [`LOOK_EVERY`] until no connection on the vhid's `vips` is left, then
/// sends once on `done`; gives up after `limit` (the coordinator has its own deadline and acts
/// on it, this only bounds the task).
///
/// The two tables are read at once, on two blocking threads: reading one walks the kernel's
/// whole table of TCP connections, shared by every namespace (4 ms with 262 144 buckets on an
/// idle 2-core VM here), so a look costs one walk's time where cores are free. Under load the
/// walks compete for the cores and the gain was within the noise (`bench db`); a look by
/// address and port would avoid the walk (see the README's switchover figures).
pub fn watch(vips: Vec<Ipv4Addr>, limit: Duration, done: mpsc::UnboundedSender<()>) {
    tokio::spawn(async move {
        let rounds = limit.as_millis() / LOOK_EVERY.as_millis() + 1;
        for _ in 0..rounds {
            let (v4, v6) = tokio::join!(
                tokio::fs::read_to_string(TABLES[0]),
                tokio::fs::read_to_string(TABLES[1])
            );
            let mut open = 0;
            for (path, read) in TABLES.into_iter().zip([v4, v6]) {
                match read {
                    Ok(table) => open += open_on(&table, &vips),
                    // No IPv6 in this kernel: nothing can listen on `::` either.
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => {
                        tracing::warn!(%error, path, "cannot read the TCP table; not draining");
                        let _ = done.send(());
                        return;
                    }
                }
            }
            if open == 0 {
                let _ = done.send(());
                return;
            }
            tokio::time::sleep(LOOK_EVERY).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   106        0 1 1 0000000000000000 100 0 0 10 0
   1: 6400630A:0CEA 0300630A:A1B2 01 00000000:00000000 00:00000000 00000000   106        0 2 1 0000000000000000 20 4 30 10 -1
   2: 6400630A:0CEA 0300630A:A1B4 03 00000000:00000000 00:00000000 00000000   106        0 3 1 0000000000000000 20 4 30 10 -1
   3: 6400630A:0CEA 0300630A:A1B6 06 00000000:00000000 00:00000000 00000000     0        0 0 3 0000000000000000
   4: 6400630A:0CEA 0300630A:A1B8 08 00000000:00000000 00:00000000 00000000   106        0 4 1 0000000000000000 20 4 30 10 -1
   5: 0100630A:0CEA 0200630A:A1BA 01 00000000:00000000 00:00000000 00000000   106        0 5 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn counts_open_and_opening_connections_on_the_vip_only() {
        let vip = Ipv4Addr::from(u32::from_str_radix("6400630A", 16).unwrap().to_ne_bytes());
        // Established and SYN_RECV on the VIP; not the listener, TIME_WAIT, CLOSE_WAIT, nor a
        // connection on the node's own address.
        assert_eq!(open_on(TABLE, &[vip]), 2);
        assert_eq!(open_on(TABLE, &[Ipv4Addr::new(192, 0, 2, 1)]), 0);
        // A vhid of several addresses counts the connections on each.
        let own = Ipv4Addr::new(10, 99, 0, 1);
        assert_eq!(open_on(TABLE, &[own, vip]), 3);
    }

    #[test]
    fn ipv4_mapped_connections_in_the_ipv6_table_count() {
        // A server listening on `::`, one connection to 10.99.0.100 from 10.99.0.3, one
        // from an IPv6 client to an IPv6 address.
        let word = |b: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(b));
        let mapped = |v4: [u8; 4]| {
            format!(
                "{}{}{}{}",
                word([0; 4]),
                word([0; 4]),
                word([0, 0, 0xff, 0xff]),
                word(v4)
            )
        };
        let v6 = [[0x20, 1, 0xd, 0xb8], [0; 4], [0; 4], [0, 0, 0, 1]]
            .map(word)
            .concat();
        let table = format!(
            "  sl  local_address remote_address st\n   0: {}:0CEA {}:A1B2 01 0\n   1: {}:0CEA {}:A1B4 01 0\n",
            mapped([10, 99, 0, 100]),
            mapped([10, 99, 0, 3]),
            v6,
            mapped([10, 99, 0, 4]),
        );
        assert_eq!(open_on(&table, &[Ipv4Addr::new(10, 99, 0, 100)]), 1);
    }

    #[test]
    fn an_unreadable_table_counts_nothing() {
        assert_eq!(open_on("", &[Ipv4Addr::LOCALHOST]), 0);
        assert_eq!(
            open_on("header\nnonsense line\n  0: zz:zz", &[Ipv4Addr::LOCALHOST]),
            0
        );
    }
}
