//! Issue 2 (Foundation): transparent interception of TCP targets, as root, with real
//! eBPF programs attached to a cgroup of each test's own.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::{
    cgroup::{TestCgroup, can_run_ebpf_tests},
    daemon::TestDaemon,
    net::{CLIENT_PY, EchoServer, run_client},
};
use serde_json::Value;
use std::fmt::Write as _;
use std::process::Command;

const NOBODY: (u32, u32) = (65534, 65534);

/// A policy protecting `addrs` as target `echo`, allowing everyone but `deny_user`.
fn policy(addrs: &[String], deny_user: Option<&str>) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    let mut p = format!(
        "[[target]]\nname = \"echo\"\nprotocol = \"tcp\"\naddresses = [{}]\n\n\
         [[rule]]\nname = \"everyone\"\ntargets = [\"*\"]\naction = \"allow\"\n",
        list.join(", ")
    );
    if let Some(user) = deny_user {
        let _ = write!(
            p,
            "\n[[rule]]\nname = \"no-{user}\"\ntargets = [\"echo\"]\nwho = {{ users = [\"{user}\"] }}\naction = \"deny\"\n"
        );
    }
    p
}

fn client(cg: &TestCgroup, user: Option<(u32, u32)>, host: &str, port: u16) -> Value {
    let port = port.to_string();
    run_client(cg.command(user, &["/usr/bin/python3", "-c", CLIENT_PY, host, &port]))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn python_exe() -> String {
    std::fs::canonicalize("/usr/bin/python3")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

#[test]
fn unprivileged_client_is_served_through_the_proxy_and_recorded() {
    if !can_run_ebpf_tests("served") {
        return;
    }
    let echo = EchoServer::start("127.0.0.2").unwrap_or_else(|e| panic!("{e}"));
    let cg = TestCgroup::new("served").unwrap_or_else(|e| panic!("{e}"));
    let d = TestDaemon::start("served", &cg, &policy(&[echo.addr.to_string()], None), "")
        .unwrap_or_else(|e| panic!("{e}"));

    let out = client(&cg, Some(NOBODY), "127.0.0.2", echo.addr.port());
    assert_eq!(out["reply"], "hello portcullis\n", "{out}\n{}", d.log());
    // getpeername shows the address the client asked for, not the proxy.
    assert_eq!(
        out["peer"],
        serde_json::json!(["127.0.0.2", echo.addr.port()])
    );

    let pid = out["pid"].as_u64().unwrap_or_default();
    let s = d
        .wait_session(|s| s["principal"]["pid"].as_u64() == Some(pid))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s["outcome"], "closed");
    assert_eq!(s["target"], "echo");
    assert_eq!(s["orig_dst"], echo.addr.to_string());
    assert_eq!(s["principal"]["uid"], 65534);
    assert_eq!(s["principal"]["user"], "nobody");
    assert_eq!(s["principal"]["exe"], python_exe());
    assert_eq!(s["principal"]["comm"], "python3");
    assert_eq!(s["bytes_up"], 17);
    assert_eq!(s["bytes_down"], 17);
    assert_eq!(s["rule"], "everyone");
}

#[test]
fn denied_principal_is_refused_and_recorded() {
    if !can_run_ebpf_tests("denied") {
        return;
    }
    let echo = EchoServer::start("127.0.0.2").unwrap_or_else(|e| panic!("{e}"));
    let cg = TestCgroup::new("denied").unwrap_or_else(|e| panic!("{e}"));
    let d = TestDaemon::start(
        "denied",
        &cg,
        &policy(&[echo.addr.to_string()], Some("nobody")),
        "",
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let out = client(&cg, Some(NOBODY), "127.0.0.2", echo.addr.port());
    assert!(
        out["reply"].as_str().is_none_or(str::is_empty),
        "nobody must get no echo: {out}"
    );
    let pid = out["pid"].as_u64().unwrap_or_default();
    let s = d
        .wait_session(|s| s["principal"]["pid"].as_u64() == Some(pid))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s["outcome"], "denied");
    assert_eq!(s["rule"], "no-nobody");
    assert_eq!(s["bytes_up"], 0);

    // Root, not denied, still gets through the same daemon.
    let ok = client(&cg, None, "127.0.0.2", echo.addr.port());
    assert_eq!(ok["reply"], "hello portcullis\n", "{ok}");
}

#[test]
fn ipv6_and_ipv4_mapped_connects_are_intercepted() {
    if !can_run_ebpf_tests("ipv6") {
        return;
    }
    let echo6 = EchoServer::start("::1").unwrap_or_else(|e| panic!("{e}"));
    let echo4 = EchoServer::start("127.0.0.3").unwrap_or_else(|e| panic!("{e}"));
    let cg = TestCgroup::new("ipv6").unwrap_or_else(|e| panic!("{e}"));
    let addrs = [echo6.addr.to_string(), echo4.addr.to_string()];
    let d =
        TestDaemon::start("ipv6", &cg, &policy(&addrs, None), "").unwrap_or_else(|e| panic!("{e}"));

    let v6 = client(&cg, Some(NOBODY), "::1", echo6.addr.port());
    assert_eq!(v6["reply"], "hello portcullis\n", "{v6}\n{}", d.log());
    assert_eq!(v6["peer"], serde_json::json!(["::1", echo6.addr.port()]));
    let mapped = client(&cg, Some(NOBODY), "::ffff:127.0.0.3", echo4.addr.port());
    assert_eq!(
        mapped["reply"],
        "hello portcullis\n",
        "{mapped}\n{}",
        d.log()
    );
    assert_eq!(
        mapped["peer"],
        serde_json::json!(["::ffff:127.0.0.3", echo4.addr.port()])
    );

    for (out, dst) in [
        (&v6, echo6.addr.to_string()),
        (&mapped, echo4.addr.to_string()),
    ] {
        let pid = out["pid"].as_u64();
        let s = d
            .wait_session(|s| s["principal"]["pid"].as_u64() == pid)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s["orig_dst"], dst);
        assert_eq!(s["outcome"], "closed");
    }
}

#[test]
fn client_in_another_network_namespace_is_untouched() {
    if !can_run_ebpf_tests("netns") {
        return;
    }
    let port = portcullis_tests::net::free_port("127.0.0.2").unwrap_or_else(|e| panic!("{e}"));
    let cg = TestCgroup::new("netns").unwrap_or_else(|e| panic!("{e}"));
    let d = TestDaemon::start(
        "netns",
        &cg,
        &policy(&[format!("127.0.0.2:{port}")], None),
        "",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let ns = Netns::new("pc-test-netns").unwrap_or_else(|e| panic!("{e}"));

    // A server inside the namespace that answers in upper case, unlike an echo.
    let server = format!(
        "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.2', {port})); s.listen(1); print('ready', flush=True)\n\
         c,_=s.accept(); data=c.recv(100); c.sendall(data.upper()); c.close()\n"
    );
    let mut srv = Command::new("ip")
        .args(["netns", "exec", &ns.name, "/usr/bin/python3", "-c", &server])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut line = String::new();
    if let Some(out) = srv.stdout.as_mut() {
        use std::io::BufRead as _;
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    assert_eq!(line.trim(), "ready");

    let port_s = port.to_string();
    let out = run_client(cg.command(
        None,
        &[
            "ip",
            "netns",
            "exec",
            &ns.name,
            "/usr/bin/python3",
            "-c",
            CLIENT_PY,
            "127.0.0.2",
            &port_s,
        ],
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = srv.kill();
    let _ = srv.wait();
    // The in-namespace server answered: the connect went where it was aimed.
    assert_eq!(out["reply"], "HELLO PORTCULLIS\n", "{out}");
    let pid = out["pid"].as_u64();
    let recorded = d.sessions().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        recorded
            .iter()
            .all(|s| s["principal"]["pid"].as_u64() != pid),
        "{recorded:#?}"
    );
}

#[test]
fn killed_daemon_fails_closed_and_restart_intercepts_again() {
    if !can_run_ebpf_tests("failclosed") {
        return;
    }
    let echo = EchoServer::start("127.0.0.2").unwrap_or_else(|e| panic!("{e}"));
    let cg = TestCgroup::new("failclosed").unwrap_or_else(|e| panic!("{e}"));
    let mut d = TestDaemon::start(
        "failclosed",
        &cg,
        &policy(&[echo.addr.to_string()], None),
        "",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let first = client(&cg, None, "127.0.0.2", echo.addr.port());
    assert_eq!(first["reply"], "hello portcullis\n", "{first}");

    d.kill9();
    let closed = client(&cg, None, "127.0.0.2", echo.addr.port());
    assert_eq!(
        closed["errno"],
        libc::ECONNREFUSED,
        "with the daemon dead the target must refuse: {closed}"
    );
    // A connect to an address that is not protected still works.
    let other = EchoServer::start("127.0.0.4").unwrap_or_else(|e| panic!("{e}"));
    let free = client(&cg, None, "127.0.0.4", other.addr.port());
    assert_eq!(free["reply"], "hello portcullis\n", "{free}");

    d.spawn().unwrap_or_else(|e| panic!("{e}"));
    assert!(d.log().contains("Adopted pinned programs"), "{}", d.log());
    let again = client(&cg, None, "127.0.0.2", echo.addr.port());
    assert_eq!(again["reply"], "hello portcullis\n", "{again}\n{}", d.log());
    let pid = again["pid"].as_u64();
    d.wait_session(|s| s["principal"]["pid"].as_u64() == pid)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn malformed_policy_is_refused_with_location_and_old_policy_stays() {
    if !can_run_ebpf_tests("badpolicy") {
        return;
    }
    let echo = EchoServer::start("127.0.0.2").unwrap_or_else(|e| panic!("{e}"));
    let cg = TestCgroup::new("badpolicy").unwrap_or_else(|e| panic!("{e}"));
    let d = TestDaemon::start(
        "badpolicy",
        &cg,
        &policy(&[echo.addr.to_string()], None),
        "",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        d.policies.join("zz-broken.toml"),
        "[[rule]]\nname = \"r\"\ntargets = [\"nope\"]\naction = \"allow\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let reload = d.cli(&["policy", "reload"]);
    let err = String::from_utf8_lossy(&reload.stderr);
    assert!(!reload.status.success());
    assert!(
        err.contains("zz-broken.toml:3:"),
        "error must name file:line: {err}"
    );
    assert!(err.contains("unchanged"), "{err}");
    let offline = d.cli(&["policy", "check", &d.policies.display().to_string()]);
    assert!(!offline.status.success());
    assert!(String::from_utf8_lossy(&offline.stderr).contains("zz-broken.toml:3:"));

    let out = client(&cg, Some(NOBODY), "127.0.0.2", echo.addr.port());
    assert_eq!(
        out["reply"], "hello portcullis\n",
        "old policy must still serve: {out}"
    );
}

#[test]
fn api_refuses_policy_reload_from_non_admin() {
    if !can_run_ebpf_tests("api") {
        return;
    }
    let cg = TestCgroup::new("api").unwrap_or_else(|e| panic!("{e}"));
    let d = TestDaemon::start(
        "api",
        &cg,
        &policy(&["127.0.0.2:1".into()], None),
        "admin_group = \"nogroup\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));

    let refused = d.cli_as(65534, 65533, &["policy", "reload"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "non-admin reload must fail");
    assert!(
        err.contains("only root or a member of `nogroup`") && err.contains("403"),
        "{err}"
    );

    let admin = d.cli_as(NOBODY.0, NOBODY.1, &["policy", "reload"]);
    assert!(
        admin.status.success(),
        "admin group member may reload: {}",
        String::from_utf8_lossy(&admin.stderr)
    );
    let root = d.cli(&["policy", "reload"]);
    assert!(root.status.success());

    // Unknown routes and bad query strings get a 4xx with a message.
    let sock = d.socket.display().to_string();
    let curl = |path: &str| {
        let o = Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                "--unix-socket",
                &sock,
                &format!("http://pc{path}"),
            ])
            .output();
        String::from_utf8_lossy(&o.unwrap_or_else(|e| panic!("{e}")).stdout).into_owned()
    };
    let nf = curl("/v1/nope");
    assert!(
        nf.ends_with("404") && nf.contains("no route GET /v1/nope"),
        "{nf}"
    );
    let bad = curl("/v1/sessions?limit=lots");
    assert!(bad.ends_with("400"), "{bad}");
}

#[test]
fn unattributed_connection_is_refused_and_recorded() {
    if !can_run_ebpf_tests("unattributed") {
        return;
    }
    let cg = TestCgroup::new("unattributed").unwrap_or_else(|e| panic!("{e}"));
    let d = TestDaemon::start(
        "unattributed",
        &cg,
        &policy(&["127.0.0.2:1".into()], None),
        "",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Straight to the proxy port from outside the cgroup: no eBPF record.
    let out = run_client({
        let mut c = Command::new("/usr/bin/python3");
        c.args(["-c", CLIENT_PY, "127.0.0.1", &d.port.to_string()]);
        c
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out["reply"].as_str().is_none_or(str::is_empty), "{out}");
    let s = d
        .wait_session(|s| s["outcome"] == "refused")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        s["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no eBPF record")
    );
    assert!(s["orig_dst"].is_null());
}

/// A network namespace with loopback up, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(prefix: &str) -> anyhow::Result<Self> {
        let name = format!("{prefix}-{}", std::process::id());
        let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
        anyhow::ensure!(
            ok(Command::new("ip").args(["netns", "add", &name])),
            "ip netns add failed"
        );
        anyhow::ensure!(
            ok(Command::new("ip").args(["netns", "exec", &name, "ip", "link", "set", "lo", "up"])),
            "lo up failed"
        );
        Ok(Self { name })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn target_given_by_host_name_is_resolved_and_protected() {
    if !can_run_ebpf_tests("hostname") {
        return;
    }
    // `localhost` resolves to 127.0.0.1 (and ::1): both become protected addresses.
    let echo = EchoServer::start("127.0.0.1").unwrap_or_else(|e| panic!("{e}"));
    let cg = TestCgroup::new("hostname").unwrap_or_else(|e| panic!("{e}"));
    let target = format!("localhost:{}", echo.addr.port());
    let d = TestDaemon::start("hostname", &cg, &policy(&[target], Some("nobody")), "")
        .unwrap_or_else(|e| panic!("{e}"));

    let denied = client(&cg, Some(NOBODY), "127.0.0.1", echo.addr.port());
    assert!(
        denied["reply"].as_str().is_none_or(str::is_empty),
        "nobody is denied, so the connect was intercepted: {denied}"
    );
    let ok = client(&cg, None, "127.0.0.1", echo.addr.port());
    assert_eq!(ok["reply"], "hello portcullis\n", "{ok}");
    let pid = ok["pid"].as_u64();
    let s = d
        .wait_session(|s| s["principal"]["pid"].as_u64() == pid)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s["orig_dst"], echo.addr.to_string());
}

#[test]
fn sigterm_ends_open_sessions_records_them_and_keeps_targets_closed() {
    if !can_run_ebpf_tests("sigterm") {
        return;
    }
    let echo = EchoServer::start("127.0.0.2").unwrap_or_else(|e| panic!("{e}"));
    let cg = TestCgroup::new("sigterm").unwrap_or_else(|e| panic!("{e}"));
    let mut d = TestDaemon::start("sigterm", &cg, &policy(&[echo.addr.to_string()], None), "")
        .unwrap_or_else(|e| panic!("{e}"));

    // A client that stays connected past the 2 s grace period.
    let hold = "import socket,sys,time\ns=socket.create_connection(('127.0.0.2', int(sys.argv[1])))\ns.sendall(b'x'); s.recv(1)\nprint('up', flush=True); time.sleep(30)\n";
    let port = echo.addr.port().to_string();
    let mut long = cg
        .command(None, &["/usr/bin/python3", "-c", hold, &port])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut line = String::new();
    if let Some(out) = long.stdout.as_mut() {
        use std::io::BufRead as _;
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    assert_eq!(line.trim(), "up");

    let status = d.stop().unwrap_or_else(|e| panic!("{e}"));
    let _ = long.kill();
    let _ = long.wait();
    assert!(
        status.success(),
        "clean exit expected: {status}\n{}",
        d.log()
    );
    assert!(d.log().contains("ending open sessions"), "{}", d.log());
    // Still pinned: the target refuses while no daemon runs.
    let closed = client(&cg, None, "127.0.0.2", echo.addr.port());
    assert_eq!(closed["errno"], libc::ECONNREFUSED, "{closed}");
    // The session cut by the shutdown was recorded with its end.
    d.spawn().unwrap_or_else(|e| panic!("{e}"));
    let s = d
        .wait_session(|s| {
            s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("daemon shutdown"))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s["bytes_up"], 1);
}
