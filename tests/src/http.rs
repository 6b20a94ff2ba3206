//! Protected HTTP(S) targets for end-to-end tests: a small JSON API in Python
//! (echoes what it received, without ever echoing a credential, and speaks
//! WebSocket), and nginx from Debian (static files, a JSON document, gzip, TLS with a
//! certificate from a test CA, and a reverse proxy to the API), both on 127.0.0.6;
//! a daemon whose policy protects them; and real clients (curl, Python requests,
//! Node's fetch) run as `nobody` through the redirect.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test support panics with a message; JSON is indexed"
)]

use crate::{
    cgroup::{TestCgroup, can_run_ebpf_tests},
    daemon::TestDaemon,
    net::free_port,
};
use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The loopback address every server here listens on.
pub const IP: &str = "127.0.0.6";
/// The name the upstream TLS certificate holds (clients use `--resolve`).
pub const TLS_NAME: &str = "api.test";
/// The API token the proxy injects; clients never hold it.
pub const TOKEN: &str = "tok-Vq3-never-in-a-record";
pub const NOBODY: (u32, u32) = (65534, 65534);

/// The JSON API: `python3 API HOST PORT TOKEN_FILE`.
const API_PY: &str = r#"
import base64, hashlib, json, sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
TOKEN = open(sys.argv[3]).read().strip()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                line = self.rfile.readline()
                size = int(line.split(b";")[0], 16) if line.strip() else 0
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""): pass
                    return data, True
                data += self.rfile.read(size); self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0)), False
    def any(self):
        if self.headers.get("Upgrade", "").lower() == "websocket":
            return self.websocket()
        if self.path.startswith("/v1/people"):
            return self.people(int(self.path.partition("n=")[2] or 3))
        data, chunked = self.body()
        auth = self.headers.get_all("Authorization") or []
        out = {"method": self.command, "path": self.path, "host": self.headers.get("Host"),
               "auth_ok": auth == ["Bearer " + TOKEN], "auth_headers": len(auth),
               "reason_header": self.headers.get("Portcullis-Reason"),
               "body_len": len(data), "body_sha256": hashlib.sha256(data).hexdigest(),
               "chunked": chunked, "owner": "carol@example.net"}
        raw = json.dumps(out).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = any
    def people(self, n):
        # A chunked JSON document of n people, written a person at a time.
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        def chunk(b):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
        chunk(b'{"users": [')
        for i in range(n):
            u = {"id": i, "email": "user%d@example.com" % i, "name": "User %d" % i,
                 "profile": {"ssn": "078-05-%04d" % (i % 10000 + 1), "city": "Oslo"}}
            chunk((b", " if i else b"") + json.dumps(u).encode())
        chunk(b'], "audit": {"ssn": 123456789, "by": "ops"}}')
        chunk(b"")
    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            chunk = self.connection.recv(65536)
            if not chunk: break
            self.connection.sendall(chunk)
        self.close_connection = True
ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"#;

/// The JSON document nginx serves at `/v1/users` (personal data to mask).
pub const USERS_JSON: &str =
    r#"{"users":[{"id":1,"email":"ann@example.com"},{"id":2,"email":"bob@example.org"}]}"#;

/// The API server and nginx, with their files.
pub struct Servers {
    pub dir: tempfile::TempDir,
    pub api_port: u16,
    /// nginx, plain HTTP.
    pub web_port: u16,
    /// nginx over TLS (certificate for [`TLS_NAME`] and [`IP`] from the test CA).
    pub tls_port: u16,
    /// nginx as a plain reverse proxy to `web_port` (what a user might put in the
    /// path instead), for the benchmark.
    pub proxy_port: u16,
    /// nginx serving the same files as `web_port` (a second target, e.g. masked).
    pub alt_port: u16,
    api: Child,
    nginx: Child,
}

impl Servers {
    /// Starts both; `None` (after saying why) when nginx is not installed.
    pub fn start() -> anyhow::Result<Option<Servers>> {
        if !Path::new("/usr/sbin/nginx").exists() {
            eprintln!("SKIP: /usr/sbin/nginx missing (cargo xtask setup installs nginx-light)");
            return Ok(None);
        }
        let dir = tempfile::Builder::new().prefix("pc-http-").tempdir()?;
        let d = dir.path();
        std::fs::write(d.join("token"), format!("{TOKEN}\n"))?;
        std::fs::write(d.join("api.py"), API_PY)?;
        write_tls(d)?;
        std::fs::create_dir_all(d.join("www/files"))?;
        std::fs::create_dir_all(d.join("tmp"))?;
        let (api_port, web_port, tls_port) = (free_port(IP)?, free_port(IP)?, free_port(IP)?);
        let (proxy_port, alt_port) = (free_port(IP)?, free_port(IP)?);
        let api = Command::new("/usr/bin/python3")
            .arg(d.join("api.py"))
            .args([IP, &api_port.to_string()])
            .arg(d.join("token"))
            .stdout(Stdio::null())
            .spawn()?;
        let ports = [api_port, web_port, tls_port, proxy_port, alt_port];
        std::fs::write(d.join("nginx.conf"), nginx_conf(d, ports))?;
        let nginx = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .stderr(std::fs::File::create(d.join("nginx.stderr"))?)
            .spawn()?;
        let servers = Servers {
            dir,
            api_port,
            web_port,
            tls_port,
            proxy_port,
            alt_port,
            api,
            nginx,
        };
        for port in ports {
            servers.wait_listening(port)?;
        }
        Ok(Some(servers))
    }

    fn wait_listening(&self, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect((IP, port)).is_err() {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "nothing listens on {IP}:{port}; nginx said: {}",
                    std::fs::read_to_string(self.dir.path().join("nginx.stderr"))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The test CA that signed nginx's certificate.
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The file holding [`TOKEN`] (the target's `value_file`).
    #[must_use]
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("token")
    }

    /// Writes a static file nginx serves at `/files/NAME`.
    pub fn add_file(&self, name: &str, data: &[u8]) -> anyhow::Result<()> {
        Ok(std::fs::write(
            self.dir.path().join("www/files").join(name),
            data,
        )?)
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        // nginx's master stops its workers on SIGTERM (SIGKILL would orphan them).
        if let Ok(pid) = i32::try_from(self.nginx.id()) {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.nginx.wait();
        let _ = self.api.kill();
        let _ = self.api.wait();
    }
}

fn nginx_conf(d: &Path, [api, web, tls, proxy, alt]: [u16; 5]) -> String {
    let d = d.display();
    format!(
        r#"daemon off;
user root;
worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type application/octet-stream;
    types {{ application/json json; text/plain txt; }}
    gzip on;
    gzip_types application/json;
    gzip_min_length 1;
    keepalive_requests 100000;
    upstream web {{
        server {IP}:{web};
        keepalive 64;
    }}
    server {{
        listen {IP}:{proxy};
        location / {{
            proxy_pass http://web;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
    server {{
        listen {IP}:{web};
        listen {IP}:{alt};
        listen {IP}:{tls} ssl;
        ssl_certificate {d}/server.crt;
        ssl_certificate_key {d}/server.key;
        root {d}/www;
        location = /v1/users {{
            default_type application/json;
            return 200 '{USERS_JSON}';
        }}
        location = /small.json {{
            default_type application/json;
            return 200 '{{"ok":true}}';
        }}
        location /api/ {{
            proxy_pass http://{IP}:{api}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    )
}

/// A test CA and nginx's certificate for [`TLS_NAME`] and [`IP`], as PEM files.
fn write_tls(d: &Path) -> anyhow::Result<()> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "portcullis http test CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let leaf = rcgen::CertificateParams::new(vec![TLS_NAME.to_owned(), IP.to_owned()])?
        .signed_by(&key, &issuer)?;
    std::fs::write(d.join("ca.crt"), ca_cert.pem())?;
    std::fs::write(d.join("server.crt"), leaf.pem())?;
    std::fs::write(d.join("server.key"), key.serialize_pem())?;
    Ok(())
}

/// Servers, a daemon protecting them, and a cgroup for the clients.
pub struct Setup {
    pub servers: Servers,
    pub cg: TestCgroup,
    pub d: TestDaemon,
}

/// Targets `api` (http, the Python API), `web` (http, nginx) and `tls` (https,
/// nginx), each with the token injected as `Authorization: Bearer …`, then `rules`.
/// `extra_config` goes into the daemon's config (e.g. an `[http]` table).
///
/// # Panics
/// When the host can run the test and a server or the daemon still fails to start.
#[must_use]
pub fn setup(name: &str, rules: &str, extra_config: &str) -> Option<Setup> {
    if !can_run_ebpf_tests(name) {
        return None;
    }
    let servers = Servers::start().unwrap_or_else(|e| panic!("{e:#}"))?;
    let creds = format!(
        "credentials = {{ header = \"Authorization\", value_file = \"{}\", prefix = \"Bearer \" }}",
        servers.token_file().display()
    );
    let policy = format!(
        "[[target]]\nname = \"api\"\nprotocol = \"http\"\naddress = \"{IP}:{}\"\n{creds}\n\n\
         [[target]]\nname = \"web\"\nprotocol = \"http\"\naddress = \"{IP}:{}\"\n\n\
         [[target]]\nname = \"tls\"\nprotocol = \"https\"\naddress = \"{IP}:{}\"\n\
         tls_ca = \"{}\"\n{creds}\n\n{rules}",
        servers.api_port,
        servers.web_port,
        servers.tls_port,
        servers.ca_file().display(),
    );
    let cg = TestCgroup::new(name).unwrap_or_else(|e| panic!("{e}"));
    let d = TestDaemon::start(name, &cg, &policy, extra_config).unwrap_or_else(|e| panic!("{e:#}"));
    Some(Setup { servers, cg, d })
}

impl Setup {
    /// `argv` as `nobody` inside the test cgroup (so its connections are redirected).
    #[must_use]
    pub fn client(&self, argv: &[&str]) -> Command {
        self.cg.command(Some(NOBODY), argv)
    }

    /// Runs `curl -sS ARGS` as a client.
    ///
    /// # Panics
    /// When curl cannot be started.
    #[must_use]
    pub fn curl(&self, args: &[&str]) -> Output {
        let mut command = vec!["curl", "-sS", "--max-time", "60"];
        command.extend_from_slice(args);
        self.client(&command)
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl: {e}"))
    }

    /// `http://127.0.0.6:PORT/PATH` of the Python API.
    #[must_use]
    pub fn api_url(&self, path: &str) -> String {
        format!("http://{IP}:{}{path}", self.servers.api_port)
    }

    /// Waits for a pending request and returns it.
    ///
    /// # Panics
    /// When none appears within 15 s.
    #[must_use]
    pub fn wait_request(&self) -> Value {
        self.d.wait_request()
    }

    /// The `http` events of every ended session of `target`, oldest first, each
    /// with its details merged in.
    ///
    /// # Panics
    /// When the sessions cannot be listed.
    #[must_use]
    pub fn events(&self, target: &str) -> Vec<Value> {
        let _ = self.d.wait_session(|s| s["target"] == target);
        let mut sessions = self.d.sessions().unwrap_or_else(|e| panic!("{e:#}"));
        sessions.reverse();
        let mut events = Vec::new();
        for s in sessions.iter().filter(|s| s["target"] == target) {
            let id = s["id"].as_str().unwrap_or_default();
            let out = self.d.cli(&["sessions", "replay", id, "--json"]);
            let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            for mut e in v["events"].as_array().cloned().unwrap_or_default() {
                if let (Some(details), Some(fields)) =
                    (e["details"].as_object().cloned(), e.as_object_mut())
                {
                    fields.extend(details);
                }
                events.push(e);
            }
        }
        events
    }
}

/// A raw client: `python3 -c RAW_PY HOST PORT PAYLOAD WAIT`: sends the payload (a
/// Python bytes literal), waits up to WAIT seconds for an answer, prints the answer's
/// status line (or `CLOSED` when the proxy closed without one, `TIMEOUT`).
pub const RAW_PY: &str = r#"
import ast, socket, sys
host, port, payload, wait = sys.argv[1], int(sys.argv[2]), ast.literal_eval(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection((host, port), timeout=wait)
s.sendall(payload)
got = b""
try:
    while b"\r\n" not in got:
        chunk = s.recv(4096)
        if not chunk: break
        got += chunk
except socket.timeout:
    print("TIMEOUT"); sys.exit(0)
print(got.split(b"\r\n")[0].decode() if got else "CLOSED")
"#;

/// A raw HTTP/2 client (prior knowledge, no TLS): `python3 -c H2_PY HOST PORT MODE N`.
/// `reset` opens N streams and cancels each at once (the "rapid reset" flood), 50 to
/// a write; `open` opens N streams it never finishes (a request body that never
/// ends), 10 to a write. Between writes, and at the end until the server closes or
/// goes quiet, it reads what the server sent, and prints one JSON line: the
/// `goaway` error code (or null), how many streams were answered with `headers`, and
/// how many the server reset as refused (`refused`).
pub const H2_PY: &str = r#"
import json, socket, struct, sys
host, port, mode, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.create_connection((host, port), timeout=5)
def frame(kind, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid) + payload
def lit(index, value):  # HPACK literal without indexing, name from the static table
    return bytes([index, len(value)]) + value
def head(method, path):
    return lit(2, method) + b"\x86" + lit(4, path) + lit(1, b"api.test")
got = {"goaway": None, "headers": 0, "refused": 0, "closed": False}
buf = b""
def pump(wait):
    # Reads what the server sends within `wait` seconds of quiet; False once closed.
    global buf
    s.settimeout(wait)
    try:
        while got["goaway"] is None:
            chunk = s.recv(65536)
            if not chunk:
                got["closed"] = True
                return False
            buf += chunk
            while len(buf) >= 9 and len(buf) >= 9 + int.from_bytes(buf[:3], "big"):
                length = int.from_bytes(buf[:3], "big"); kind, flags = buf[3], buf[4]
                payload, buf = buf[9:9 + length], buf[9 + length:]
                if kind == 4 and not flags & 1:
                    s.sendall(frame(4, 1, 0))
                elif kind == 1:
                    got["headers"] += 1
                elif kind == 3 and struct.unpack(">I", payload[:4])[0] == 7:
                    got["refused"] += 1
                elif kind == 7:
                    got["goaway"] = struct.unpack(">I", payload[4:8])[0]
    except socket.timeout:
        return True
    except OSError:
        got["closed"] = True
        return False
    return False
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0))
batch = 50 if mode == "reset" else 10
for first in range(0, n, batch):
    out = b""
    for i in range(first, min(n, first + batch)):
        sid = 2 * i + 1
        if mode == "reset":
            out += frame(1, 0x5, sid, head(b"GET", b"/v1/reset")) + frame(3, 0, sid, struct.pack(">I", 8))
        else:
            out += frame(1, 0x4, sid, head(b"POST", b"/v1/open"))
    try:
        s.sendall(out)
    except OSError:
        got["closed"] = True
        break
    if not pump(0.02):
        break
else:
    pump(3)
print(json.dumps(got))
"#;

/// stdout and stderr as text.
#[must_use]
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// stdout parsed as JSON.
///
/// # Panics
/// When it is not JSON (with both streams in the message).
#[must_use]
pub fn json(out: &Output) -> Value {
    let (stdout, stderr) = text(out);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): stdout={stdout:?} stderr={stderr:?}"))
}
