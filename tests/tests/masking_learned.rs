//! Issue 22 (Masking: columns that hold personal data are learned): with value
//! recognizers only (`mask = ["email", "credit_card"]`), fifteen SQL transforms of a
//! column bring an address back in a reversible form unless the column is learned.
//! After one plain read (`mask_learn = "results"`) or after `discover`, none does.
#![expect(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "root tests panic with a message"
)]

use portcullis_tests::{
    cgroup::TestCgroup,
    daemon::TestDaemon,
    pgproxy::{NOBODY, Setup, setup_with_rules, text},
};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Local parts without a dot, as most are: reversed, `moc.elpmaxe@ecila` no longer
/// looks like an address (its "domain" has no dot).
const EMAILS: [&str; 3] = ["alice@example.com", "bob@example.org", "carol@example.net"];

fn rules(learn: &str) -> String {
    format!(
        r#"
[[rule]]
name = "connect-masked"
targets = ["db"]
action = "allow"
mask = ["email", "credit_card"]
mask_learn = "{learn}"
"#
    )
}

/// Creates `customers` (three rows, an address each) and a view that computes from
/// the address, as the table's owner, straight on the server.
fn customers(s: &Setup) {
    let rows: Vec<String> = EMAILS
        .iter()
        .enumerate()
        .map(|(i, e)| format!("({i}, '{e}', 'note {i}')"))
        .collect();
    s.pg.psql(
        "app",
        &format!(
            "SET ROLE app_owner;
             CREATE TABLE customers (id int, email text, note text);
             INSERT INTO customers VALUES {};
             CREATE VIEW rev_view AS SELECT id, reverse(email) AS r FROM customers;",
            rows.join(", ")
        ),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
}

/// The transform classes: each returns an address in a form no value recognizer
/// sees, unless the column is masked whole.
const TRANSFORMS: &[&str] = &[
    // 1. reversed
    "SELECT reverse(email) FROM customers",
    // 2. base64
    "SELECT encode(convert_to(email, 'UTF8'), 'base64') FROM customers",
    // 3. hex
    "SELECT encode(convert_to(email, 'UTF8'), 'hex') FROM customers",
    // 4. replace of the '@'
    "SELECT replace(email, '@', ' at ') FROM customers",
    // 5. translate of the '@' and dots
    "SELECT translate(email, '@.', '#,') FROM customers",
    // 6. split_part
    "SELECT split_part(email, '@', 1), split_part(email, '@', 2) FROM customers",
    // 7. letters joined with spaces
    "SELECT array_to_string(regexp_split_to_array(email, ''), ' ') FROM customers",
    // 8. JSON
    "SELECT json_agg(reverse(email)) FROM customers",
    // 9. scalar subquery
    "SELECT (SELECT reverse(email) FROM customers ORDER BY id LIMIT 1)",
    // 10. CTE
    "WITH x AS (SELECT email AS e FROM customers) SELECT reverse(e) FROM x",
    // 11. union
    "SELECT reverse(email) FROM customers UNION ALL SELECT 'nothing'",
    // 12. one letter per row
    "SELECT regexp_split_to_table(email, '') FROM customers",
    // 13. regexp_replace with spaces
    "SELECT regexp_replace(email, '(.)', '\\1 ', 'g') FROM customers",
    // 14. lateral subquery
    "SELECT x FROM customers, LATERAL (SELECT reverse(email) AS x) l",
    // 15. a view that computes from it
    "SELECT r FROM rev_view",
];

/// Whether `output` holds a recognizable form of one of [`EMAILS`]: a name or domain
/// forwards or backwards once spacing and punctuation are gone, or its base64 or hex.
fn leaks(output: &str) -> Option<String> {
    let plain: String = output
        .to_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    for email in EMAILS {
        let (local, domain) = email.split_once('@').unwrap_or_default();
        let first = local.split('.').next().unwrap_or_default();
        let domain = domain.split('.').next().unwrap_or_default();
        for word in [first, domain] {
            let backwards: String = word.chars().rev().collect();
            if plain.contains(word) || plain.contains(&backwards) {
                return Some(format!("{word} (from {email})"));
            }
        }
        let b64 = base64(email.as_bytes());
        let hex: String = email.bytes().map(|b| format!("{b:02x}")).collect();
        if output.contains(b64.get(..12).unwrap_or_default()) || output.contains(&hex[..10]) {
            return Some(format!("an encoding of {email}"));
        }
    }
    None
}

/// Standard base64 with padding, as PostgreSQL's `encode(…, 'base64')` writes it.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs `sql` through the proxy; panics if psql fails.
fn run(s: &Setup, sql: &str) -> String {
    let out = s.psql(&["-c", sql]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{sql}: {stderr}\n{}", s.d.log());
    stdout
}

/// Every transform returns nothing recognizable.
fn no_transform_leaks(s: &Setup, when: &str) {
    for sql in TRANSFORMS {
        let stdout = run(s, sql);
        if let Some(what) = leaks(&stdout) {
            panic!("{when}: {sql} leaked {what}:\n{stdout}\n{}", s.d.log());
        }
    }
}

/// The learned columns as the CLI lists them, waiting (up to 10 s) for `pred`.
fn wait_learned(d: &TestDaemon, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = d.cli(&["masking", "learned", "--json"]);
        assert!(out.status.success(), "{}", text(&out).1);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let list = list.as_array().cloned().unwrap_or_default();
        if pred(&list) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "learned columns never matched: {list:#?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn has(list: &[Value], table: &str, column: &str) -> bool {
    list.iter()
        .any(|c| c["table"] == table && c["column"] == column)
}

#[test]
fn without_learning_transforms_leak() {
    let Some(s) = setup_with_rules("learn-off", &rules("off")) else {
        return;
    };
    customers(&s);
    // The plain value is masked…
    let plain = run(&s, "SELECT email FROM customers");
    assert!(leaks(&plain).is_none(), "{plain}");
    // …but the hole this issue closes is real: transforms bring it back.
    let leaking: Vec<&str> = TRANSFORMS
        .iter()
        .copied()
        .filter(|sql| leaks(&run(&s, sql)).is_some())
        .collect();
    println!(
        "without learning, {} of {} transforms leak: {leaking:#?}",
        leaking.len(),
        TRANSFORMS.len()
    );
    assert!(
        leaking.contains(&"SELECT reverse(email) FROM customers") && leaking.len() >= 10,
        "{leaking:#?}"
    );
    let learned = s.d.cli(&["masking", "learned", "--json"]);
    assert_eq!(String::from_utf8_lossy(&learned.stdout).trim(), "[]");
}

#[test]
fn one_plain_read_teaches_the_column() {
    let Some(s) = setup_with_rules("learn-results", &rules("results")) else {
        return;
    };
    customers(&s);
    // One plain read: the first row's address is masked by value and teaches the
    // column; the rows after it are masked whole.
    let plain = run(&s, "SELECT id, email, note FROM customers ORDER BY id");
    assert!(leaks(&plain).is_none(), "{plain}");
    assert!(
        plain.contains("[email]") && plain.contains("note 2"),
        "{plain}"
    );
    no_transform_leaks(&s, "after one plain read");
    // Plain columns stay as they are; the learned one is masked whole.
    assert_eq!(
        run(&s, "SELECT id, note FROM customers ORDER BY id LIMIT 1").trim(),
        "0|note 0"
    );
    let list = wait_learned(&s.d, |l| has(l, "customers", "email"));
    let email = list
        .iter()
        .find(|c| c["column"] == "email")
        .cloned()
        .unwrap_or_default();
    assert_eq!(email["schema"], "public");
    assert_eq!(email["recognizer"], "email");
    assert_eq!(email["learned_by"], "results");
    assert!(email["first_session"].is_string(), "{email}");
    assert!(!has(&list, "customers", "note"), "{list:#?}");
    // The human listing says how to undo over-masking.
    let human = text(&s.d.cli(&["masking", "learned"])).0;
    assert!(
        human.contains("public.customers.email") && human.contains("forget"),
        "{human}"
    );
    // Learning is in the audit chain.
    let audit = text(&s.d.cli(&["sessions", "export"])).0;
    assert!(audit.contains("column_learned"), "{audit}");
}

#[test]
fn forget_and_pin() {
    let Some(s) = setup_with_rules("learn-forget", &rules("results")) else {
        return;
    };
    customers(&s);
    run(&s, "SELECT email FROM customers");
    wait_learned(&s.d, |l| has(l, "customers", "email"));
    // Only admins forget or pin.
    let refused = s.d.cli_as(
        NOBODY.0,
        NOBODY.1,
        &["masking", "forget", "db", "customers.email"],
    );
    assert!(!refused.status.success(), "{}", text(&refused).0);
    assert!(
        text(&refused).1.contains("only root"),
        "{}",
        text(&refused).1
    );
    // Pinned: forget is refused.
    let pin = s.d.cli(&["masking", "pin", "db", "public.customers.email"]);
    assert!(pin.status.success(), "{}", text(&pin).1);
    let kept = s.d.cli(&["masking", "forget", "db", "customers.email"]);
    assert!(
        !kept.status.success() && text(&kept).1.contains("pinned"),
        "{}",
        text(&kept).1
    );
    assert!(leaks(&run(&s, "SELECT reverse(email) FROM customers")).is_none());
    // Unpinned and forgotten: the column is no longer masked whole, so its reverse
    // comes back (the over-masking undone), until a read teaches it again.
    assert!(
        s.d.cli(&["masking", "unpin", "db", "customers.email"])
            .status
            .success()
    );
    let forgot = s.d.cli(&["masking", "forget", "db", "customers.email"]);
    assert!(forgot.status.success(), "{}", text(&forgot).1);
    wait_learned(&s.d, |l| !has(l, "customers", "email"));
    let reversed = run(&s, "SELECT reverse(email) FROM customers");
    assert!(
        leaks(&reversed).is_some(),
        "forgotten, yet masked: {reversed}"
    );
    run(&s, "SELECT email FROM customers");
    no_transform_leaks(&s, "learned again");
    let audit = text(&s.d.cli(&["sessions", "export"])).0;
    for kind in ["column_pinned", "column_unpinned", "column_forgotten"] {
        assert!(audit.contains(kind), "{kind} not audited: {audit}");
    }
}

#[test]
fn a_retyped_column_is_learned_again() {
    let Some(s) = setup_with_rules("learn-retype", &rules("results")) else {
        return;
    };
    customers(&s);
    run(&s, "SELECT email FROM customers");
    let before = wait_learned(&s.d, |l| has(l, "customers", "email"));
    assert_eq!(before[0]["type_oid"], 25, "text");
    s.pg.psql(
        "app",
        "SET ROLE app_owner; DROP VIEW rev_view; \
         ALTER TABLE customers ALTER COLUMN email TYPE varchar(200)",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let plain = run(&s, "SELECT email FROM customers");
    assert!(leaks(&plain).is_none(), "{plain}");
    wait_learned(&s.d, |l| {
        l.iter()
            .any(|c| c["column"] == "email" && c["type_oid"] == 1043)
    });
}

#[test]
fn discover_teaches_before_any_read() {
    let Some(s) = setup_with_rules("learn-discover", &rules("discover")) else {
        return;
    };
    customers(&s);
    // A table the target's login may not read is skipped with a note.
    s.pg.psql(
        "app",
        "CREATE TABLE secret_admins (email text); \
         INSERT INTO secret_admins VALUES ('root@example.com'); \
         REVOKE ALL ON secret_admins FROM PUBLIC",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let out = s.d.cli(&["masking", "discover", "db", "--json"]);
    assert!(out.status.success(), "{}\n{}", text(&out).1, s.d.log());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    // (The discover the daemon ran at its start may have been first.)
    let learned = report["learned"].to_string();
    assert!(
        learned.contains("public.customers.email (email)") || report["already_learned"] != 0,
        "{report:#}"
    );
    let list = wait_learned(&s.d, |l| has(l, "customers", "email"));
    assert!(
        list.iter().all(|c| c["learned_by"] == "discover"),
        "{list:#?}"
    );
    assert!(!learned.contains("note"), "{report:#}");
    assert!(
        report["notes"].to_string().contains("secret_admins"),
        "{report:#}"
    );
    assert!(report["duration_ms"].is_u64(), "{report:#}");
    // Nothing was read through the proxy, yet every transform is masked.
    no_transform_leaks(&s, "after discover");
    // Its queries are a recorded session of the daemon's own.
    let session =
        s.d.wait_session(|x| x["id"] == report["session"])
            .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(session["client_addr"], "portcullis (masking discover)");
    // With mask_learn = "discover", a reload samples again by itself.
    s.pg.psql(
        "app",
        "SET ROLE app_owner; CREATE TABLE contacts (who text); \
         INSERT INTO contacts VALUES ('dave@example.com')",
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(s.d.cli(&["policy", "reload"]).status.success());
    wait_learned(&s.d, |l| has(l, "contacts", "who"));
}

#[test]
fn a_second_gateway_applies_what_the_first_learned() {
    let Some(s) = setup_with_rules("learn-shared", &rules("results")) else {
        return;
    };
    customers(&s);
    // Two more gateways on one PostgreSQL store, with the same policy as `s`.
    s.pg.create_database("gateways")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let url = s.pg.url("gateways");
    let policy =
        std::fs::read_to_string(s.d.policies.join("main.toml")).unwrap_or_else(|e| panic!("{e}"));
    let (cg_a, cg_b) = (
        TestCgroup::new("learn-gw-a").unwrap_or_else(|e| panic!("{e}")),
        TestCgroup::new("learn-gw-b").unwrap_or_else(|e| panic!("{e}")),
    );
    let a = TestDaemon::start_with_store("learn-gw-a", &cg_a, &policy, &url, "gateway = \"a\"\n")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let b = TestDaemon::start_with_store("learn-gw-b", &cg_b, &policy, &url, "gateway = \"b\"\n")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let psql = |cg: &TestCgroup, sql: &str| {
        let bin = s.client_bin("psql");
        let conninfo = s.conninfo("app", "disable");
        let out = cg
            .command(
                Some(NOBODY),
                &[&bin, "-X", "-At", "-d", &conninfo, "-c", sql],
            )
            .env("PGCONNECT_TIMEOUT", "10")
            .current_dir("/tmp")
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.status.success(), "{sql}: {}\n{}", text(&out).1, a.log());
        text(&out).0
    };
    // Gateway B has learned nothing: the reverse comes back there.
    assert!(leaks(&psql(&cg_b, "SELECT reverse(email) FROM customers")).is_some());
    // One plain read through gateway A…
    psql(&cg_a, "SELECT email FROM customers");
    let list = wait_learned(&b, |l| has(l, "customers", "email"));
    assert_eq!(list[0]["host"], "a");
    // …and gateway B masks the column too, once it has read the store again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = psql(&cg_b, "SELECT reverse(email) FROM customers");
        if leaks(&out).is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway B never applied it: {out}\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
