//! The CARP protocol: wire format and election, free of I/O.
pub mod machine;
pub mod time;
pub mod wire;
