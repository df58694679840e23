//! A CARP agent, wire-compatible with UCARP, that moves a virtual IP to a surviving node.
pub mod carp;
pub mod cli;
pub mod config;
pub mod control;
pub mod db;
pub mod drain;
pub mod failover;
pub mod handoff;
pub mod hooks;
pub mod inspect;
pub mod metrics;
pub mod net;
pub mod probe;
pub mod quorum;
pub mod runtime;
pub mod vip;
pub mod xdp;
