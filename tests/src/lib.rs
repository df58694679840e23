//! Harness for the integration tests: network-namespace rigs with a bridge as the switch,
//! real `ucarp` peers, the agent under test, packet captures and bounded waits.
//!
//! Every rig owns the namespaces, processes and files it creates and removes them on drop,
//! also when a test panics. Names carry the test process id and a counter, so rigs of tests
//! running in parallel never collide.
//!
//! Environment:
//! - `CLUSTER_SKIP_NETNS=1` skips the tests that need root and namespaces (they fail loudly
//!   otherwise when not run as root).
//! - `CLUSTER_AGENT_BIN` names the agent binary (default `target/debug/cluster-agent`; build it
//!   with `cargo xtask build` so that the XDP program is embedded).
//! - `UCARP_BIN` overrides the `ucarp` binary.
//! - `CLUSTER_TEST_LOGS=1` prints every process's output, not only on failure.
//! - `CLUSTER_KEEP_RIG=1` keeps rig directories (scripts, logs, captures); a failing test
//!   always keeps its own and prints where.
//!
//! The scenarios mostly wait on protocol timers, so they profit from more test threads than
//! cores (`-- --test-threads=8`).

pub mod agent;
pub mod capture;
pub mod cmd;
pub mod env;
pub mod frames;
pub mod mariadb;
pub mod oracle;
pub mod proc;
pub mod rig;
pub mod ucarp;
pub mod wait;

pub use agent::{Agent, AgentOpts, Inspected, Status, masters};
pub use capture::{Capture, Record, read_pcap, read_pcap_records};
pub use env::{agent_bin, netns_available};
pub use proc::Proc;
pub use rig::{Rig, RigConfig};
pub use ucarp::UcarpOpts;
pub use wait::{hold_for, wait_for, wait_until};
