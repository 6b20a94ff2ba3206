//! `cargo xtask setup`: everything a fresh machine of this kind needs, idempotently.

use crate::sh;
use anyhow::{Context as _, bail};
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

/// Debian packages the build (libclang for bindgen) and the tests (real servers and
/// clients) need.
const APT_PACKAGES: &[&str] = &[
    "libclang-dev",
    "clang",
    "postgresql",
    "postgresql-client",
    "pgbouncer",
    "openssh-server",
    "openssh-client",
    "rsync",
    // git over SSH (tests/tests/ssh_clients.rs).
    "git",
    // sshd's X11 forwarding writes its cookie with xauth (tests/tests/ssh_forwarding.rs).
    "xauth",
    "asciinema",
    "python3-paramiko",
    "ansible-core",
    "python3",
    "python3-psycopg2",
    "socat",
    "iproute2",
    "util-linux",
    "curl",
    // The web console tests: a real OpenID provider (Node, whose own package brings
    // npm here; Debian's separate `npm` package would conflict with it) and a
    // headless browser.
    "nodejs",
    "chromium",
    "chromium-driver",
    "systemd",
    // The README's tour uses nc.
    "netcat-openbsd",
    "ca-certificates",
    "nginx-light",
    "wrk",
    "apache2-utils",
    "python3-requests",
    "fonts-liberation",
    "fonts-dejavu-core",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> anyhow::Result<()> {
    apt()?;
    oidc_provider()?;
    rust_src()?;
    clippy()?;
    cargo_fuzz()?;
    cargo_deb()?;
    bpf_linker()
}

/// `cargo xtask deb` and the dpkg test of `cargo xtask test` build packages with
/// cargo-deb.
pub fn cargo_deb() -> anyhow::Result<()> {
    cargo_tool("deb", "cargo-deb")
}

/// `cargo xtask fuzz` runs cargo-fuzz on the nightly toolchain.
fn cargo_fuzz() -> anyhow::Result<()> {
    cargo_tool("fuzz", "cargo-fuzz")
}

/// Installs `krate` (the `cargo SUBCOMMAND` it provides) unless it already answers
/// `--version`.
fn cargo_tool(subcommand: &str, krate: &str) -> anyhow::Result<()> {
    let works = Command::new("cargo")
        .args([subcommand, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Ok(());
    }
    println!("xtask setup: installing {krate} (about a minute)");
    sh(Command::new("cargo").args(["install", krate, "--locked"]))
}

/// `cargo xtask test` runs clippy; a minimal rustup profile lacks it.
fn clippy() -> anyhow::Result<()> {
    let works = Command::new("cargo")
        .args(["clippy", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Ok(());
    }
    sh(Command::new("rustup").args(["component", "add", "clippy"]))
}

fn apt() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask setup: installing {}", missing.join(" "));
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The OpenID provider the web console tests start (`tests/oidc`): the npm package
/// `oidc-provider` at the version pinned in its `package-lock.json`.
fn oidc_provider() -> anyhow::Result<()> {
    let dir = crate::workspace_root()?.join("tests/oidc");
    if dir.join("node_modules/oidc-provider/package.json").exists() {
        return Ok(());
    }
    if Command::new("npm").arg("--version").output().is_err() {
        bail!("npm is missing; install Node.js 20 or later with npm, then run `cargo xtask setup`");
    }
    println!("xtask setup: installing the test OpenID provider (npm ci in tests/oidc)");
    sh(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--omit=dev"])
        .current_dir(&dir))
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn rust_src() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    sh(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// `bpf-linker` must link against the nightly's own LLVM: point `LLVM_PREFIX` at a
/// directory of symlinks to the sysroot's `libLLVM` (both the plain and soname names),
/// kept under `CARGO_HOME` so the installed linker finds it at run time.
fn bpf_linker() -> anyhow::Result<()> {
    let works = Command::new("bpf-linker")
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        });
    if works {
        return Ok(());
    }
    let sysroot = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()?;
    let sysroot = PathBuf::from(String::from_utf8(sysroot.stdout)?.trim());
    let lib = std::fs::read_dir(sysroot.join("lib"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .context("the nightly toolchain has no libLLVM.so.*; reinstall it with rustup")?;
    let cargo_home = std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo"),
        PathBuf::from,
    );
    let prefix = cargo_home.join("portcullis-llvm");
    let libdir = prefix.join("lib");
    std::fs::create_dir_all(&libdir)?;
    let soname = lib.file_name().context("libLLVM has no file name")?;
    for name in [std::ffi::OsStr::new("libLLVM.so"), soname] {
        let link = libdir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)?;
    }
    let llvm_major = soname
        .to_string_lossy()
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    if llvm_major.is_empty() {
        bail!("cannot tell the LLVM version from {}", lib.display());
    }
    println!(
        "xtask setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm_major} (about 90 s)"
    );
    sh(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{llvm_major}"))
        .arg("--force")
        .env("LLVM_PREFIX", &prefix))
}
