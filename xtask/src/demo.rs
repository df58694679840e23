//! `cargo xtask demo`: a live cluster to watch failover happen.

use anyhow::{Result, bail};

/// Arguments of `cargo xtask demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Passed to the demo unchanged.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Setup has already run; use `crate::tasks::build` for the agent with XDP embedded.
pub fn run(args: DemoArgs) -> Result<()> {
    let _ = args;
    bail!("`cargo xtask demo` is not yet implemented")
}
