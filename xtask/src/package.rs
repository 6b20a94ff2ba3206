//! `cargo xtask install` (release build, then `portcullis install`) and
//! `cargo xtask deb` (a Debian package with cargo-deb).

use crate::{build_agent, sh};
use anyhow::Context as _;
use std::{path::Path, process::Command};

/// Builds in release and installs on this host as a systemd service.
pub fn install(extra: &[String]) -> anyhow::Result<()> {
    crate::require_root("install")?;
    let bin = build_agent(true)?;
    sh(Command::new(bin).arg("install").args(extra))
}

/// Builds the release binary and `target/debian/portcullis_*.deb`; returns its path.
pub fn deb() -> anyhow::Result<std::path::PathBuf> {
    ensure_cargo_deb()?;
    build_agent(true)?;
    // The unit as the package installs it: the binary in /usr/bin.
    let unit = std::fs::read_to_string("agent/dist/portcullis.service")?
        .replace("@BIN@", "/usr/bin/portcullis");
    std::fs::create_dir_all("target/deb")?;
    std::fs::write("target/deb/portcullis.service", unit)?;
    sh(Command::new("cargo").args(["deb", "--no-build", "--package", "portcullis"]))?;
    let newest = std::fs::read_dir(Path::new("target/debian"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .context("cargo deb made no .deb in target/debian")?;
    println!("xtask deb: {}", newest.display());
    Ok(newest)
}

fn ensure_cargo_deb() -> anyhow::Result<()> {
    let works = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        println!("xtask deb: installing cargo-deb");
        sh(Command::new("cargo").args(["install", "cargo-deb", "--locked"]))?;
    }
    Ok(())
}
