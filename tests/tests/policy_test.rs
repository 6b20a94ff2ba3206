//! Issue 21: `portcullis policy test` (exit 0 / 1 / 2, failures as `file:line`) on the
//! shipped policies and on broken ones, and a daemon whose `policy reload` refuses a
//! policy whose tests fail, keeping the one in force.
#![expect(clippy::panic, reason = "tests panic with a message")]

use portcullis_tests::{
    cgroup::{TestCgroup, can_run_ebpf_tests},
    daemon::{TestDaemon, binary},
};
use std::{path::Path, process::Command};

fn policy_test(dir: &Path) -> (i32, String) {
    let out = Command::new(binary())
        .args(["policy", "test"])
        .arg(dir)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

const POLICY: &str = "[[target]]\nname = \"echo\"\nprotocol = \"tcp\"\naddress = \"127.0.0.2:7000\"\n\n\
    [[rule]]\nname = \"root\"\ntargets = [\"echo\"]\nwho = { users = [\"root\"] }\naction = \"allow\"\n";

fn case(expect: &str) -> String {
    format!(
        "[[case]]\nname = \"root\"\nprincipal = {{ user = \"root\", uid = 0 }}\ntarget = \"echo\"\nexpect = \"{expect}\"\n"
    )
}

#[test]
fn shipped_policies_pass() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let (code, text) = policy_test(&shipped);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(" 0 failed"), "{text}");
}

#[test]
fn exit_codes_say_pass_fail_or_unusable() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let tests = dir.path().join("tests");
    std::fs::create_dir(&tests).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.path().join("p.toml"), POLICY).unwrap_or_else(|e| panic!("{e}"));
    let write =
        |text: &str| std::fs::write(tests.join("a.toml"), text).unwrap_or_else(|e| panic!("{e}"));

    write(&case("allow"));
    assert_eq!(policy_test(dir.path()).0, 0);

    write(&format!("# first\n\n{}", case("deny")));
    let (code, text) = policy_test(dir.path());
    assert_eq!(code, 1, "{text}");
    let at = format!(
        "FAIL {}:3: case \"root\": expected deny, got allow by rule `root`",
        tests.join("a.toml").display()
    );
    assert!(text.contains(&at), "{text}");

    write("[[case]]\nprincipal = {}\ntarget = \"nope\"\nexpect = \"deny\"\n");
    let (code, text) = policy_test(dir.path());
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("target `nope` is not defined"), "{text}");

    write(&case("allow"));
    std::fs::write(dir.path().join("p.toml"), "[[rule]\n").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy_test(dir.path()).0, 2, "a policy that does not load");
}

#[test]
fn reload_refuses_a_policy_whose_tests_fail() {
    if !can_run_ebpf_tests("policy-test-reload") {
        return;
    }
    let cg = TestCgroup::new("ptreload").unwrap_or_else(|e| panic!("{e}"));
    let d = TestDaemon::start("ptreload", &cg, POLICY, "").unwrap_or_else(|e| panic!("{e}"));
    let tests = d.policies.join("tests");
    std::fs::create_dir(&tests).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(tests.join("a.toml"), case("allow")).unwrap_or_else(|e| panic!("{e}"));
    let ok = d.cli(&["policy", "reload"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // A change that breaks a test: refused, and the policy in force stays.
    let changed = POLICY.replace("\"root\"]", "\"admin\"]");
    std::fs::write(d.policies.join("main.toml"), changed).unwrap_or_else(|e| panic!("{e}"));
    let refused = d.cli(&["policy", "reload"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{err}");
    assert!(
        err.contains("a.toml:1") && err.contains("expected allow, got deny"),
        "{err}"
    );
    assert!(err.contains("the policy in force is unchanged"), "{err}");
    let status = d.cli(&["status", "--json"]);
    assert!(status.status.success());
}
