//! Adding and removing a vhid's addresses with rtnetlink.

use futures::TryStreamExt;
use rtnetlink::Handle;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};

use crate::config::VipAddr;

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
}

/// A vhid's addresses on one interface, which come and go together.
pub struct Vip {
    handle: Handle,
    ifindex: u32,
    addrs: Vec<VipAddr>,
}

impl Vip {
    /// Opens a netlink connection served by a background task of the current runtime.
    pub fn new(ifindex: u32, addrs: Vec<VipAddr>) -> Result<Self, VipError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Vip {
            handle,
            ifindex,
            addrs,
        })
    }

    /// Whether any of the addresses is on the interface.
    pub async fn is_present(&self) -> Result<bool, VipError> {
        Ok(!self.find().await?.is_empty())
    }

    /// Every copy of every address on the interface, whatever its prefix.
    async fn find(&self) -> Result<Vec<AddressMessage>, VipError> {
        let mut found = Vec::new();
        for vip in &self.addrs {
            let copies: Vec<AddressMessage> = self
                .handle
                .address()
                .get()
                .set_link_index_filter(self.ifindex)
                .set_address_filter(vip.addr)
                .execute()
                .try_collect()
                .await?;
            found.extend(copies);
        }
        Ok(found)
    }

    /// Adds every address; already present is success, so a retry or a restart cannot fail
    /// on it. One that fails stops the rest: the retry adds them all again.
    pub async fn add(&self) -> Result<(), VipError> {
        for vip in &self.addrs {
            let mut request = self
                .handle
                .address()
                .add(self.ifindex, vip.addr, vip.prefix)
                .replace();
            if vip.addr.is_ipv6() {
                // Duplicate address detection would hold a moving VIP back for a second or
                // more, and the backups do not hold it: the election already settled who does.
                let message = request.message_mut();
                message.header.flags |= AddressHeaderFlags::Nodad;
                message
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            request.execute().await?;
        }
        Ok(())
    }

    /// Removes every copy of every address on the interface (whatever prefix a crashed run or
    /// a script left); absent is success.
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
