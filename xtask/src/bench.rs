//! `cargo xtask bench <what>`: measurements.

use anyhow::{Result, bail};

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which benchmark to run.
    pub what: String,
    /// Passed to the benchmark unchanged.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Setup has already run; use `crate::tasks::build` for the agent with XDP embedded.
pub fn run(args: BenchArgs) -> Result<()> {
    bail!("`cargo xtask bench {}` is not yet implemented", args.what)
}
