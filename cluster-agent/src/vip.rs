//! Adding and removing the VIP with rtnetlink.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::Handle;
use rtnetlink::packet_route::address::AddressMessage;

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
}

/// The VIP on one interface.
pub struct Vip {
    handle: Handle,
    ifindex: u32,
    addr: Ipv4Addr,
    prefix: u8,
}

impl Vip {
    /// Opens a netlink connection served by a background task of the current runtime.
    pub fn new(ifindex: u32, addr: Ipv4Addr, prefix: u8) -> Result<Self, VipError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Vip {
            handle,
            ifindex,
            addr,
            prefix,
        })
    }

    pub async fn is_present(&self) -> Result<bool, VipError> {
        Ok(!self.find().await?.is_empty())
    }

    /// Every copy of the VIP on the interface, whatever its prefix.
    async fn find(&self) -> Result<Vec<AddressMessage>, VipError> {
        Ok(self
            .handle
            .address()
            .get()
            .set_link_index_filter(self.ifindex)
            .set_address_filter(IpAddr::V4(self.addr))
            .execute()
            .try_collect()
            .await?)
    }

    /// Adds the VIP; already present is success, so a retry or a restart cannot fail on it.
    pub async fn add(&self) -> Result<(), VipError> {
        self.handle
            .address()
            .add(self.ifindex, IpAddr::V4(self.addr), self.prefix)
            .replace()
            .execute()
            .await?;
        Ok(())
    }

    /// Removes every copy of the VIP on the interface (whatever prefix a crashed run or a
    /// script left); absent is success.
    pub async fn remove(&self) -> Result<(), VipError> {
        for msg in self.find().await? {
            match self.handle.address().del(msg).execute().await {
                Ok(()) => {}
                // Raced with someone else removing it: the goal is reached.
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
