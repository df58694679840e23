//! The test harness: network-namespace rigs with a bridge as the switch, physical faults
//! (power cut, partition, frozen and killed processes), the agent under test, real `ucarp`,
//! keepalived and MariaDB peers, clusters with databases, packet captures and sockets, and
//! bounded waits. The integration tests and `cargo xtask demo|bench` both run on it.
//!
//! Everything returns `anyhow::Result`: a harness that panics cannot serve a benchmark that
//! must survive one failed run. Every rig owns the namespaces, processes and files it creates
//! and removes them on drop, also after an error or a panic. Names carry the process id and a
//! counter, so rigs of tests running in parallel never collide.
//!
//! Environment:
//! - `CLUSTER_SKIP_NETNS=1` skips the tests that need root and namespaces (they fail loudly
//!   otherwise when not run as root).
//! - `CLUSTER_AGENT_BIN` names the agent binary (default `target/debug/cluster-agent`; build it
//!   with `cargo xtask build` so that the XDP program is embedded).
//! - `UCARP_BIN` overrides the `ucarp` binary.
//! - `CLUSTER_TEST_LOGS=1` prints every process's output, not only a failed test's.
//! - `CLUSTER_KEEP_RIG=1` keeps rig directories (scripts, logs, captures); a failed test
//!   always keeps its own and prints where (see [`netns_test`]).
//!
//! The scenarios mostly wait on protocol timers, so they profit from more test threads than
//! cores (`-- --test-threads=8`).

pub mod agent;
pub mod capture;
pub mod cluster;
pub mod cmd;
pub mod env;
pub mod etcd;
pub mod frames;
pub mod keepalived;
pub mod mariadb;
pub mod netns;
pub mod oracle;
pub mod packet;
pub mod proc;
pub mod relay;
pub mod rig;
pub mod scope;
pub mod scrape;
pub mod timing;
pub mod ucarp;
pub mod wait;
pub mod watch;

pub use agent::{Agent, AgentOpts, Inspected, Status, masters};
pub use capture::{Capture, Record, read_pcap, read_pcap_records};
pub use cluster::{Cluster, ClusterConfig, Implementation, Rank};
pub use env::{agent_bin, netns_available};
pub use keepalived::KeepalivedOpts;
pub use proc::Proc;
pub use rig::{Rig, RigConfig, VipSample};
pub use scope::netns_test;
pub use timing::{Timed, Timing};
pub use ucarp::UcarpOpts;
pub use wait::{Poller, hold_for, wait_for, wait_timed, wait_until};
