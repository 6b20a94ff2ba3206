//! Builds the eBPF programs (`agent-ebpf`) with aya-build and the nightly toolchain, so
//! the daemon embeds them. `AYA_BUILD_SKIP=1` skips that (for host-only unit tests); the
//! daemon then refuses to start with a message saying so.
use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join("portcullis");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    // sqlx::migrate! embeds the migration files; a new one must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // An empty object: `intercept::load` reports that the build skipped eBPF.
        fs::write(&object, [])?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../agent-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    println!("cargo:rerun-if-changed={ebpf_dir}/common/src");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "portcullis-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
