//! Embeds the XDP object when `cargo xtask build` provides one.
//!
//! The object is built for another target by another toolchain, so a plain `cargo build` cannot
//! produce it; instead of failing, such builds embed nothing and the agent falls back to its
//! raw-socket receive path at run time.

use std::{env, fs, path::PathBuf};

const VAR: &str = "CLUSTER_EBPF_OBJ";

fn main() {
    println!("cargo:rerun-if-env-changed={VAR}");
    // Any rerun-if line turns off cargo's "rerun on every file change" default; keep this script
    // itself as a trigger.
    println!("cargo:rerun-if-changed=build.rs");

    let object = env::var_os(VAR)
        .filter(|value| !value.is_empty())
        .map(PathBuf::from);
    let embedded = match object {
        Some(path) if path.is_file() => {
            // The include must not depend on the build script's working directory.
            let path = fs::canonicalize(&path).unwrap_or(path);
            println!("cargo:rerun-if-changed={}", path.display());
            let literal = format!("{:?}", path.display().to_string());
            format!("Some(::aya::include_bytes_aligned!({literal}))")
        }
        Some(path) => {
            println!(
                "cargo:warning={VAR}={} is not a file; building without the XDP program",
                path.display()
            );
            "None".to_owned()
        }
        None => {
            if env::var("PROFILE").is_ok_and(|p| p == "release") {
                println!(
                    "cargo:warning={VAR} is not set: this agent has no XDP program and will run on raw sockets only (`cargo xtask build` embeds it)"
                );
            }
            "None".to_owned()
        }
    };
    // `cluster-agent --version` says which kind of build it is.
    let xdp = if embedded == "None" {
        "without the XDP program"
    } else {
        "XDP program embedded"
    };
    println!("cargo:rustc-env=CLUSTER_AGENT_BUILD_XDP={xdp}");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let code = format!(
        "/// The XDP object `cargo xtask build` produced, if this build embeds one.\n\
         pub const EBPF_OBJ: Option<&[u8]> = {embedded};\n"
    );
    fs::write(out_dir.join("ebpf_obj.rs"), code).expect("writing ebpf_obj.rs into OUT_DIR");
}
