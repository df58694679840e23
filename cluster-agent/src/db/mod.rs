//! The local database follows the VIP: the master's MariaDB (or MySQL) accepts writes, every
//! other node's is fenced (`read_only`) and replicates from the master over TLS with the
//! master's certificate verified, positioned by GTID.
//!
//! - [`bootstrap`]: the CA, certificates, server settings and users a cluster needs first.
//! - [`Db`]: the agent's handle on its local server: health, promote, fence, replicate.
//! - [`gtid`]: GTID sets, to find errant transactions before a node rejoins.
//! - [`settings`]: the server settings acknowledged writes rest on.
//! - [`sql`]: the statements, per server flavour.

pub mod bootstrap;
pub mod gtid;
pub mod secret;
pub mod settings;
pub mod sql;

mod client;

pub use bootstrap::{Bootstrap, BootstrapError, BootstrapOptions, NodeFiles, NodeSpec, bootstrap};
pub use client::{
    Db, DbConfig, DbError, Health, NotReady, Promoted, ReplicaStatus, Replicating, fault,
};
pub use secret::{Secret, SecretError};
pub use sql::Flavour;
