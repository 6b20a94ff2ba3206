#![expect(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use super::*;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies");

const POLICY: &str = "[[target]]\nname = \"pg\"\nprotocol = \"postgres\"\naddress = \"127.0.0.2:5432\"\n\
    [[group]]\nname = \"dba\"\nusers = [\"ann\"]\nidp_groups = [\"db-admins\"]\n\
    [[rule]]\nname = \"staff\"\ntargets = [\"pg\"]\nwho = { unix_groups = [\"staff\"] }\naction = \"allow\"\n\
    [[rule]]\nname = \"ddl\"\ntargets = [\"pg\"]\nsql = [\"ddl\"]\naction = \"review\"\napprovers = [\"dba\"]\n";

/// A policy directory with `POLICY` and `tests/t.toml` holding `cases`.
fn dir_with(cases: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("p.toml"), POLICY).unwrap();
    fs::create_dir(dir.path().join(TESTS_DIR)).unwrap();
    fs::write(dir.path().join(TESTS_DIR).join("t.toml"), cases).unwrap();
    dir
}

const STAFF: &str = "principal = { user = \"bob\", groups = [\"staff\"] }\ntarget = \"pg\"\n";

#[test]
fn shipped_policies_pass_their_tests() {
    let report = run_dir(Path::new(SHIPPED)).unwrap();
    assert!(report.cases >= 15, "{report:?}");
    let failures: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_failing_case_names_its_file_line_and_what_was_decided() {
    let cases = format!(
        "[[case]]\n{STAFF}expect = \"allow\"\n\n[[case]]\nname = \"drop\"\n{STAFF}sql = \"CREATE TABLE t (a int)\"\nexpect = \"allow\"\n"
    );
    let dir = dir_with(&cases);
    let report = run_dir(dir.path()).unwrap();
    assert_eq!(report.cases, 2);
    assert_eq!(report.failures.len(), 1, "{report:?}");
    let failure = report.failures[0].to_string();
    let at = format!("{}/tests/t.toml:6: case \"drop\": ", dir.path().display());
    assert!(failure.starts_with(&at), "{failure}");
    assert!(
        failure.contains("expected allow, got review by rule `ddl`"),
        "{failure}"
    );
}

#[test]
fn rule_approvers_and_approver_are_checked() {
    let review = format!("[[case]]\n{STAFF}sql = \"DROP TABLE t\"\nexpect = \"review\"\n");
    let ok = format!(
        "{review}approvers = [\"dba\"]\nrule = \"ddl\"\n[case.approver]\nidp_groups = [\"db-admins\"]\n"
    );
    assert!(run_dir(dir_with(&ok).path()).unwrap().failures.is_empty());
    let cases = [
        (
            format!("{review}rule = \"staff\"\n"),
            "expected rule `staff`",
        ),
        (
            format!("{review}approvers = [\"ops\"]\n"),
            "expected approvers [ops], got [dba]",
        ),
        (
            format!("{review}[case.approver]\nuser = \"bob\"\ngroups = [\"staff\"]\n"),
            "do not admit them",
        ),
        (
            format!("{review}[case.approver]\nuser = \"ann\"\nmay_decide = false\n"),
            "admit them",
        ),
    ];
    for (text, want) in cases {
        let report = run_dir(dir_with(&text).path()).unwrap();
        let failure = report.failures[0].to_string();
        assert!(failure.contains(want), "{text}\n{failure}");
    }
}

#[test]
fn unusable_cases_are_errors_with_their_line() {
    let cases = [
        (
            "[[case]]\nprincipal = {}\ntarget = \"nope\"\nexpect = \"deny\"\n",
            1,
            "target `nope` is not defined",
        ),
        (
            "[[case]]\nprincipal = {}\ntarget = \"pg\"\nexpect = \"maybe\"\n",
            4,
            "unknown variant `maybe`",
        ),
        (
            "\n[[case]]\nprincipal = { usr = \"a\" }\n",
            3,
            "unknown field `usr`",
        ),
        (
            "[[case]]\nprincipal = {}\ntarget = \"pg\"\nsql = \"SELECT 1\"\ncommand = \"ls\"\nexpect = \"deny\"\n",
            1,
            "at most one action",
        ),
        (
            "[[case]]\nprincipal = {}\ntarget = \"pg\"\nmethod = \"GET\"\nexpect = \"deny\"\n",
            1,
            "go together",
        ),
        (
            "[[case]]\nprincipal = {}\ntarget = \"pg\"\nmethod = \"GET\"\npath = \"/a%5Cb\"\nexpect = \"deny\"\n",
            1,
            "the proxy refuses path",
        ),
        (
            "[[case]]\nprincipal = {}\ntarget = \"pg\"\nexpect = \"deny\"\napprovers = []\n",
            1,
            "only go with",
        ),
    ];
    for (text, line, want) in cases {
        let dir = dir_with(text);
        let error = run_dir(dir.path()).unwrap_err().to_string();
        let at = format!("{}/tests/t.toml:{line}: ", dir.path().display());
        assert!(
            error.starts_with(&at) && error.contains(want),
            "{text}\n{error}"
        );
    }
}

#[test]
fn no_tests_is_unusable_for_the_command_and_fine_for_a_reload() {
    let dir = dir_with("# nothing yet\n");
    assert!(matches!(
        run_dir(dir.path()),
        Err(PolicyTestError::NoTests(_))
    ));
    assert!(load_checked(dir.path()).is_ok());
    fs::remove_dir_all(dir.path().join(TESTS_DIR)).unwrap();
    assert!(load_checked(dir.path()).is_ok());
}

#[test]
fn load_checked_refuses_a_policy_whose_tests_fail() {
    let dir = dir_with(&format!("[[case]]\n{STAFF}expect = \"deny\"\n"));
    let error = load_checked(dir.path()).unwrap_err();
    assert_eq!(error.line(), Some(1));
    let text = error.to_string();
    assert!(
        text.contains("expected deny, got allow by rule `staff`"),
        "{text}"
    );
    assert!(text.contains("1 of 1 cases fail"), "{text}");
    fs::write(dir.path().join(TESTS_DIR).join("t.toml"), "[[case]\n").unwrap();
    let text = load_checked(dir.path()).unwrap_err().to_string();
    assert!(text.contains("policy test file:"), "{text}");
}

#[test]
fn ssh_commands_and_http_requests_are_decided_as_the_proxies_ask() {
    let policy = "[[target]]\nname = \"db1\"\nprotocol = \"ssh\"\naddress = \"127.0.0.5:22\"\n\
        known_hosts = \"/etc/ssh/ssh_known_hosts\"\n\
        [[target]]\nname = \"api\"\nprotocol = \"http\"\naddress = \"127.0.0.6:80\"\n\
        [[group]]\nname = \"seniors\"\nusers = [\"ann\"]\n\
        [[rule]]\nname = \"in\"\ntargets = [\"*\"]\naction = \"allow\"\n\
        [[rule]]\nname = \"no-rm\"\ntargets = [\"db1\"]\ncommands = [\"rm *\"]\naction = \"deny\"\n\
        [[rule]]\nname = \"deletes\"\ntargets = [\"api\"]\nmethods = [\"DELETE\"]\npaths = [\"/v1/users/**\"]\n\
        action = \"review\"\napprovers = [\"seniors\"]\n";
    let who = "principal = { user = \"bob\" }\n";
    let cases = format!(
        "[[case]]\n{who}target = \"db1\"\ncommand = \"ls; rm -rf /data\"\nexpect = \"deny\"\nrule = \"no-rm\"\n\
         [[case]]\n{who}target = \"db1\"\ncommand = \"sh -c 'rm -rf /data'\"\nexpect = \"deny\"\n\
         [[case]]\n{who}target = \"db1\"\ncommand = \"ls -l /data\"\nexpect = \"allow\"\n\
         [[case]]\n{who}target = \"api\"\nmethod = \"DELETE\"\npath = \"/v1/%75sers/../users/42\"\n\
         expect = \"review\"\napprovers = [\"seniors\"]\n\
         [[case]]\n{who}target = \"api\"\nmethod = \"GET\"\npath = \"/v1/users/42\"\nexpect = \"allow\"\n"
    );
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("p.toml"), policy).unwrap();
    fs::create_dir(dir.path().join(TESTS_DIR)).unwrap();
    fs::write(dir.path().join(TESTS_DIR).join("t.toml"), cases).unwrap();
    let report = run_dir(dir.path()).unwrap();
    assert_eq!(report.cases, 5);
    let failures: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_case_principal_may_carry_a_linked_identity() {
    let cases = "[[case]]\nprincipal = { user = \"bob\", idp_groups = [\"db-admins\"] }\ntarget = \"pg\"\n\
                 expect = \"deny\"\n\n[[case]]\nprincipal = { idp_groups = [\"x\"], email = \"a@b.c\" }\n\
                 target = \"pg\"\nexpect = \"deny\"\n";
    let policy = format!(
        "{POLICY}[[rule]]\nname = \"admins\"\ntargets = [\"pg\"]\nwho = {{ idp_groups = [\"db-admins\"] }}\naction = \"allow\"\n"
    );
    let dir = dir_with(cases);
    fs::write(dir.path().join("p.toml"), &policy).unwrap();
    let report = run_dir(dir.path()).unwrap();
    let failures: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        failures[0].contains("allow") && failures[0].contains("admins"),
        "{failures:#?}"
    );
}
