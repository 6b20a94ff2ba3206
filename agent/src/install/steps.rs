//! The steps of `install` and `uninstall`, each printed as it is done or skipped.

use super::{CONFIG, EXAMPLE_POLICY, EXAMPLE_TESTS, GROUPS, InstallError, Options, unit_for};
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

const UNIT_PATH: &str = "/etc/systemd/system/portcullis.service";
const CONFIG_DIR: &str = "/etc/portcullis";
const STATE_DIR: &str = "/var/lib/portcullis";

/// Installs (or upgrades) the daemon on the host; see the module docs.
pub fn install(opts: &Options) -> Result<(), InstallError> {
    check_root(opts)?;
    if !opts.packaged {
        copy_binary(opts)?;
        write_new(&opts.at(UNIT_PATH), &unit_for(&opts.bin), 0o644, true)?;
    }
    let etc = opts.at(CONFIG_DIR);
    write_new(&etc.join("portcullis.toml"), CONFIG, 0o644, false)?;
    let policies = etc.join("policies");
    if policies.exists() {
        println!("kept      {} (exists)", policies.display());
    } else {
        write_new(&policies.join("example.toml"), EXAMPLE_POLICY, 0o644, false)?;
        write_new(
            &policies.join("tests/example.toml"),
            EXAMPLE_TESTS,
            0o644,
            false,
        )?;
    }
    let state = opts.at(STATE_DIR);
    mkdir(&state, 0o700)?;
    super::trust::sweep(opts, false);
    if opts.real_root() {
        for group in GROUPS {
            ensure_group(group)?;
        }
        if opts.enable {
            enable()?;
        }
    }
    Ok(())
}

/// Stops and removes the service; `purge` also removes configuration and data.
pub fn uninstall(opts: &Options, purge: bool) -> Result<(), InstallError> {
    check_root(opts)?;
    if opts.real_root() && systemd_running() {
        // Not enabled or not loaded is fine: there is nothing to stop then.
        let _ = systemctl(&["disable", "--now", "portcullis.service"]);
        println!("stopped   portcullis.service");
    }
    if opts.real_root() {
        release_pins();
    }
    super::trust::sweep(opts, true);
    if !opts.packaged {
        remove(&opts.at(UNIT_PATH))?;
        remove(
            &opts
                .root
                .join(opts.bin.strip_prefix("/").unwrap_or(&opts.bin)),
        )?;
        if opts.real_root() && systemd_running() {
            systemctl(&["daemon-reload"])?;
        }
    }
    if purge {
        for dir in [CONFIG_DIR, STATE_DIR] {
            let path = opts.at(dir);
            if path.exists() {
                fs::remove_dir_all(&path).map_err(io("remove", &path))?;
                println!("removed   {}", path.display());
            }
        }
    } else {
        println!(
            "kept      {} and {} (remove them with --purge)",
            opts.at(CONFIG_DIR).display(),
            opts.at(STATE_DIR).display()
        );
    }
    Ok(())
}

fn check_root(opts: &Options) -> Result<(), InstallError> {
    if opts.real_root() && !nix::unistd::geteuid().is_root() {
        return Err(InstallError::NotRoot);
    }
    Ok(())
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
    let path = path.to_owned();
    move |source| InstallError::Io { op, path, source }
}

/// Copies this executable to `opts.bin` under a temporary name, then renames it: a
/// running daemon keeps its (old) file, and no one sees a half-written binary.
fn copy_binary(opts: &Options) -> Result<(), InstallError> {
    let to = opts
        .root
        .join(opts.bin.strip_prefix("/").unwrap_or(&opts.bin));
    let from = std::env::current_exe().map_err(io("find", Path::new("/proc/self/exe")))?;
    if fs::canonicalize(&to).ok().as_deref() == Some(from.as_path()) {
        println!("kept      {} (this binary)", to.display());
        return Ok(());
    }
    let dir = to.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io("create", dir))?;
    let tmp = to.with_extension("new");
    fs::copy(&from, &tmp).map_err(io("copy the binary to", &tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).map_err(io("chmod", &tmp))?;
    fs::rename(&tmp, &to).map_err(io("rename into", &to))?;
    println!("installed {}", to.display());
    Ok(())
}

/// Writes `text` to `path` unless it exists (or always, with `replace`).
fn write_new(path: &Path, text: &str, mode: u32, replace: bool) -> Result<(), InstallError> {
    if path.exists() && !replace {
        println!("kept      {} (exists)", path.display());
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    let tmp = path.with_extension("portcullis-new");
    fs::write(&tmp, text).map_err(io("write", &tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io("chmod", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename into", path))?;
    println!("wrote     {}", path.display());
    Ok(())
}

fn mkdir(path: &Path, mode: u32) -> Result<(), InstallError> {
    fs::create_dir_all(path).map_err(io("create", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io("chmod", path))?;
    println!("ready     {}", path.display());
    Ok(())
}

fn remove(path: &PathBuf) -> Result<(), InstallError> {
    match fs::remove_file(path) {
        Ok(()) => {
            println!("removed   {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("remove", path)(e)),
    }
}

fn ensure_group(name: &str) -> Result<(), InstallError> {
    if nix::unistd::Group::from_name(name).ok().flatten().is_some() {
        println!("kept      group {name} (exists)");
        return Ok(());
    }
    run("groupadd", &["--system", name])?;
    println!("created   group {name}");
    Ok(())
}

/// Whether systemd is PID 1 here (`/run/systemd/system` exists then).
fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn enable() -> Result<(), InstallError> {
    if !systemd_running() {
        println!(
            "note      systemd is not running here: start the daemon with \
             `portcullis daemon` (as root), or boot with systemd"
        );
        return Ok(());
    }
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "portcullis.service"])?;
    // An upgrade restarts the running daemon on the new binary; it adopts the pins.
    systemctl(&["restart", "portcullis.service"])?;
    println!("enabled   portcullis.service (and started it)");
    Ok(())
}

/// Removes the pins of the configured pin directory: protected targets open up.
fn release_pins() {
    let config = Path::new(crate::config::DEFAULT_CONFIG_PATH);
    let pins = crate::config::Config::load(config).map_or_else(
        |_| PathBuf::from("/sys/fs/bpf/portcullis"),
        |c| c.bpf_pin_dir,
    );
    match crate::intercept::release(&pins) {
        Ok(n) => println!("removed   {n} pins from {}", pins.display()),
        Err(error) => println!(
            "note      cannot remove the pins in {}: {error}",
            pins.display()
        ),
    }
}

fn systemctl(args: &[&str]) -> Result<(), InstallError> {
    run("systemctl", args)
}

fn run(program: &str, args: &[&str]) -> Result<(), InstallError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| InstallError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(InstallError::Command {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}
