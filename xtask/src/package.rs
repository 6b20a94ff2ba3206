//! `cargo xtask install` (release build, then `portcullis install`) and
//! `cargo xtask deb` (a Debian package with cargo-deb).

use crate::{build_agent, sh};
use anyhow::Context as _;
use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Builds in release and installs on this host as a systemd service.
pub fn install(extra: &[String]) -> anyhow::Result<()> {
    crate::require_root("install")?;
    let bin = build_agent(true)?;
    sh(Command::new(bin).arg("install").args(extra))
}

/// Builds the release binary and `target/debian/portcullis_*.deb`; returns its path.
pub fn deb() -> anyhow::Result<PathBuf> {
    crate::setup::cargo_deb()?;
    build_agent(true)?;
    package(&["--no-build"], Path::new("target/debian"))
}

/// The package of the debug binary `cargo xtask test` just built, in
/// `target/debian-test/`, for the dpkg test in `tests/tests/install.rs`: a release
/// build would add a quarter of an hour to CI. Stripped and quickly compressed: about
/// 40 s. (cargo-deb warns that the dev profile is for tests only, as here.)
pub fn test_deb() -> anyhow::Result<PathBuf> {
    crate::setup::cargo_deb()?;
    package(
        &["--no-build", "--profile", "dev", "--fast"],
        Path::new("target/debian-test"),
    )
}

/// Runs `cargo deb` with `args` into `out`; returns the newest package there.
fn package(args: &[&str], out: &Path) -> anyhow::Result<PathBuf> {
    // The unit as the package installs it: the binary in /usr/bin.
    let unit = std::fs::read_to_string("agent/dist/portcullis.service")?
        .replace("@BIN@", "/usr/bin/portcullis");
    std::fs::create_dir_all("target/deb")?;
    std::fs::write("target/deb/portcullis.service", unit)?;
    std::fs::create_dir_all(out)?;
    sh(Command::new("cargo")
        .args(["deb", "--package", "portcullis", "--output"])
        .arg(out)
        .args(args))?;
    let newest = std::fs::read_dir(out)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .with_context(|| format!("cargo deb made no .deb in {}", out.display()))?;
    println!("xtask deb: {}", newest.display());
    Ok(newest.canonicalize()?)
}
