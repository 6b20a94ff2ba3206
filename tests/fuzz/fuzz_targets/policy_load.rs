//! The policy loader on arbitrary file text: an error or a policy, never a panic;
//! a policy that loads decides a connection to each of its targets.
#![no_main]

use portcullis::{identity::Principal, policy::Policy};
use std::sync::OnceLock;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let path = dir().path().join("policy.toml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(policy) = Policy::load_dir(dir().path()) else {
        return;
    };
    let principal = Principal {
        pid: 1,
        ppid: None,
        uid: 1000,
        gid: 1000,
        user: Some("alice".into()),
        unix_groups: vec!["staff".into()],
        exe: Some("/usr/bin/psql".into()),
        cmdline: None,
        comm: "psql".into(),
        cgroup: None,
        idp: None,
    };
    for target in policy.targets() {
        let _ = policy.decide(&principal, &target.name);
        let _ = policy.masks_for(&principal, &target.name);
    }
});
