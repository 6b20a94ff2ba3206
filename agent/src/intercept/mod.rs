//! Interception: the eBPF programs that send connects aimed at protected targets to
//! our proxy, and the lookups that tell the proxy who connected and where they meant
//! to go.
//!
//! Everything the kernel needs is pinned under the configured bpffs directory: one
//! link per program (`link_<program>`) and the maps (by name). Pins outlive the daemon,
//! so a killed daemon leaves connects to protected targets redirected to a dead
//! listener (they fail: closed by default), and a restarted daemon adopts the pinned
//! links and maps instead of re-attaching, so there is no window where a connect goes
//! direct. [`release`] removes the pins on purpose.

mod addr;
mod fs;

pub use addr::{ClientAddr, OrigDstAddr, from_endpoint, to_endpoint};
pub use fs::cgroup2_root;

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, MapError},
    programs::{
        CgroupSockAddr, ProgramError, SockOps,
        links::{CgroupAttachMode, FdLink, LinkError, PinnedLink},
    },
};
use portcullis_common::{Endpoint, Origin, ProxyConfig, names};
use std::{
    collections::HashSet,
    net::SocketAddr,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::Mutex,
};

/// The eBPF object built by `agent/build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portcullis"));

/// Programs in attach order: the ones that observe first, the redirecting ones last,
/// so a connect is never redirected before its origin can be recorded.
const PROGRAMS: [&str; 5] = [
    names::SOCKOPS,
    names::GETPEERNAME4,
    names::GETPEERNAME6,
    names::CONNECT4,
    names::CONNECT6,
];

/// Why interception could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error(
        "this binary was built with AYA_BUILD_SKIP and has no eBPF programs; rebuild without it"
    )]
    NoObject,
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no cgroup2 filesystem is mounted (see /proc/mounts); mount one or set `cgroup` in the config"
    )]
    NoCgroup2,
    #[error("{0} is not on a bpffs; set `bpf_pin_dir` to a directory under /sys/fs/bpf")]
    NotBpffs(PathBuf),
    #[error("cannot load the eBPF programs: {0}; are you root on Linux ≥ 5.8 with BTF?")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program `{name}`: {source}")]
    Program {
        name: &'static str,
        source: ProgramError,
    },
    #[error("cannot pin or adopt the link of `{name}`: {reason}")]
    Link { name: &'static str, reason: String },
    #[error("eBPF map `{name}`: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("eBPF map `{0}` is missing from the object; the build is broken")]
    MissingMap(&'static str),
    #[error("cannot read the daemon's network namespace cookie: {0}")]
    NetnsCookie(std::io::Error),
}

/// Where to attach and pin, and the proxy the programs redirect to.
#[derive(Debug, Clone)]
pub struct Settings {
    /// cgroup v2 directory to attach at; `None` = the cgroup2 mount root.
    pub cgroup: Option<PathBuf>,
    /// bpffs directory for the pins.
    pub pin_dir: PathBuf,
    pub proxy: ProxyConfig,
}

/// The loaded (or adopted) programs and the maps the daemon works with.
pub struct Interceptor {
    targets: Mutex<HashMap<MapData, Endpoint, u32>>,
    connections: Mutex<HashMap<MapData, Endpoint, Origin>>,
    /// Links we attached or adopted; dropping a pinned link leaves it attached.
    _links: Vec<PinnedLink>,
    cgroup: PathBuf,
    adopted: usize,
}

impl Interceptor {
    /// Loads the programs, or adopts the pinned ones, and points them at `settings.proxy`.
    pub fn start(settings: &Settings) -> Result<Self, InterceptError> {
        if EBPF_OBJECT.is_empty() {
            return Err(InterceptError::NoObject);
        }
        let cgroup = match &settings.cgroup {
            Some(c) => c.clone(),
            None => cgroup2_root()?,
        };
        fs::ensure_bpffs(&settings.pin_dir)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&settings.pin_dir)
            .load(EBPF_OBJECT)?;

        let mut config: Array<MapData, ProxyConfig> = take_map(&mut ebpf, names::CONFIG)?;
        config
            .set(0, settings.proxy, 0)
            .map_err(|source| InterceptError::Map {
                name: names::CONFIG,
                source,
            })?;
        let targets = take_map(&mut ebpf, names::TARGETS)?;
        let connections = take_map(&mut ebpf, names::CONNECTIONS)?;

        let cgroup_dir = std::fs::File::open(&cgroup).map_err(|source| InterceptError::Io {
            op: "open cgroup",
            path: cgroup.clone(),
            source,
        })?;
        let mut links = Vec::with_capacity(PROGRAMS.len());
        let mut adopted = 0;
        for name in PROGRAMS {
            let pin = settings.pin_dir.join(format!("link_{name}"));
            if pin.exists() {
                let link =
                    PinnedLink::from_pin(&pin).map_err(|e: LinkError| InterceptError::Link {
                        name,
                        reason: e.to_string(),
                    })?;
                links.push(link);
                adopted += 1;
                continue;
            }
            let fd_link = attach(&mut ebpf, name, &cgroup_dir)?;
            let link = fd_link.pin(&pin).map_err(|e| InterceptError::Link {
                name,
                reason: e.to_string(),
            })?;
            links.push(link);
        }
        Ok(Self {
            targets: Mutex::new(targets),
            connections: Mutex::new(connections),
            _links: links,
            cgroup,
            adopted,
        })
    }

    /// The cgroup the programs are attached to.
    #[must_use]
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// How many programs were already pinned and adopted (0 on a fresh start).
    #[must_use]
    pub fn adopted(&self) -> usize {
        self.adopted
    }

    /// Makes the protected set exactly `wanted`: adds the new, removes the stale.
    pub fn set_targets(&self, wanted: &HashSet<SocketAddr>) -> Result<(), InterceptError> {
        let map_err = |source| InterceptError::Map {
            name: names::TARGETS,
            source,
        };
        let mut map = self
            .targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let wanted: HashSet<Endpoint> = wanted.iter().map(|a| to_endpoint(*a)).collect();
        let present: Vec<Endpoint> = map.keys().filter_map(Result::ok).collect();
        for stale in present.iter().filter(|e| !wanted.contains(e)) {
            map.remove(stale).map_err(map_err)?;
        }
        for new in wanted.iter().filter(|e| !present.contains(e)) {
            map.insert(new, 1, 0).map_err(map_err)?;
        }
        Ok(())
    }

    /// Takes the kernel's record of the redirected connect whose client end is `client`.
    /// `None` means the connection cannot be attributed: refuse it.
    #[must_use]
    pub fn take_origin(&self, client: ClientAddr) -> Option<Origin> {
        let key = to_endpoint(client.0);
        let mut map = self
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let origin = map.get(&key, 0).ok()?;
        let _ = map.remove(&key);
        Some(origin)
    }
}

/// Removes every pin under `pin_dir`: detaches the programs and frees the maps.
/// Returns how many pins were removed.
pub fn release(pin_dir: &Path) -> Result<usize, InterceptError> {
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(source) => {
            return Err(InterceptError::Io {
                op: "read",
                path: pin_dir.into(),
                source,
            });
        }
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        std::fs::remove_file(&path).map_err(|source| InterceptError::Io {
            op: "remove pin",
            path,
            source,
        })?;
        removed += 1;
    }
    let _ = std::fs::remove_dir(pin_dir);
    Ok(removed)
}

/// The network namespace cookie of the calling process.
pub fn netns_cookie() -> Result<u64, InterceptError> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(InterceptError::NetnsCookie)?;
    let mut cookie: u64 = 0;
    let mut len = libc::socklen_t::try_from(size_of::<u64>()).unwrap_or(8);
    // SAFETY: a valid socket fd and an 8-byte out buffer whose length we pass.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(InterceptError::NetnsCookie(std::io::Error::last_os_error()));
    }
    Ok(cookie)
}

fn take_map<T: TryFrom<aya::maps::Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, InterceptError> {
    let map = ebpf
        .take_map(name)
        .ok_or(InterceptError::MissingMap(name))?;
    T::try_from(map).map_err(|source| InterceptError::Map { name, source })
}

fn attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    cgroup: &std::fs::File,
) -> Result<FdLink, InterceptError> {
    let perr = |source| InterceptError::Program { name, source };
    let program = ebpf.program_mut(name).ok_or(InterceptError::Program {
        name,
        source: ProgramError::NotLoaded,
    })?;
    let link = if name == names::SOCKOPS {
        let p: &mut SockOps = program.try_into().map_err(perr)?;
        p.load().map_err(perr)?;
        // bpf_link_create on a cgroup takes no flags: links always coexist.
        let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(perr)?;
        FdLink::try_from(p.take_link(id).map_err(perr)?)
    } else {
        let p: &mut CgroupSockAddr = program.try_into().map_err(perr)?;
        p.load().map_err(perr)?;
        // bpf_link_create on a cgroup takes no flags: links always coexist.
        let id = p.attach(cgroup, CgroupAttachMode::Single).map_err(perr)?;
        FdLink::try_from(p.take_link(id).map_err(perr)?)
    };
    link.map_err(|e| InterceptError::Link {
        name,
        reason: e.to_string(),
    })
}
