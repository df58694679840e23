//! Running external commands visibly.
//!
//! Every command is echoed with the environment it was given, so a failure on a CI machine can
//! be reproduced by pasting the line into a shell.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, ensure};

/// Prints a progress line; stderr keeps it in order with the output of the commands.
pub fn say(message: impl std::fmt::Display) {
    eprintln!("xtask: {message}");
}

/// Runs `command` with inherited stdio and fails unless it exits successfully.
pub fn run(command: &mut Command) -> Result<()> {
    let line = describe(command);
    say(format_args!("$ {line}"));
    let status = command
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    ensure!(status.success(), "`{line}` failed ({status})");
    Ok(())
}

/// Whether `command` can be started and exits successfully; its output is discarded.
pub fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn describe(command: &Command) -> String {
    let mut words: Vec<String> = command
        .get_envs()
        .filter_map(|(key, value)| Some(format!("{}={}", key.display(), quote(value?))))
        .collect();
    words.push(quote(command.get_program()));
    words.extend(command.get_args().map(quote));
    words.join(" ")
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.into_owned()
    } else if word.chars().any(char::is_control) {
        // Bash's $'...' keeps separators such as CARGO_ENCODED_RUSTFLAGS' \x1f visible.
        let escaped: String = word
            .chars()
            .map(|c| match c {
                '\\' | '\'' => format!("\\{c}"),
                c if c.is_control() => format!("\\x{:02x}", u32::from(c)),
                c => c.to_string(),
            })
            .collect();
        format!("$'{escaped}'")
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The workspace root, whatever directory `cargo xtask` was started from.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// The cargo that started this xtask, so host builds use the same toolchain.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Where `cargo install` puts binaries; it is not always on PATH for root shells.
pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// Puts those of `dirs` that PATH lacks in front of it, for tools that must be found first.
pub fn prepend_path(command: &mut Command, dirs: &[&Path]) -> Result<()> {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let existing: Vec<PathBuf> = std::env::split_paths(&current).collect();
    let missing: Vec<PathBuf> = dirs
        .iter()
        .filter(|dir| !existing.iter().any(|have| have == *dir))
        .map(|dir| dir.to_path_buf())
        .collect();
    if !missing.is_empty() {
        let path =
            std::env::join_paths(missing.into_iter().chain(existing)).context("building PATH")?;
        command.env("PATH", path);
    }
    Ok(())
}
