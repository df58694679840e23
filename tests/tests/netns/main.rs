//! Integration tests on network-namespace rigs, in one binary so that their (mostly waiting)
//! scenarios run in parallel: each test builds its own independent rig.
//!
//! Run as root. `CLUSTER_SKIP_NETNS=1` skips the tests that need namespaces; the agent binary
//! comes from `CLUSTER_AGENT_BIN` or `target/debug/cluster-agent`.

mod cluster;
mod config;
mod control;
mod db;
mod db_agent;
mod flood;
mod golden;
mod hooks;
mod interop;
mod junk;
mod metrics;
mod quorum;
mod reload;
mod rig_sanity;
mod safety;
mod track;
mod unicast;
mod vhids;
mod xdp;
