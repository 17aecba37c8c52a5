//! The binary's shared conventions: help, version, log formats, a clear error without a command.

use std::process::Command;

fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

#[test]
fn help_and_version() {
    let help = tessera()
        .arg("--help")
        .output()
        .expect("run tessera --help");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("Usage: tessera"), "{text}");
    assert!(text.contains("--log-format"), "{text}");

    let version = tessera()
        .arg("--version")
        .output()
        .expect("run tessera --version");
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("tessera {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn no_command_is_a_clear_error_in_either_log_format() {
    let text = tessera().output().expect("run tessera");
    assert!(!text.status.success());
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(stderr.contains("no command given"), "{stderr}");

    let json = tessera()
        .args(["--log-format", "json"])
        .env("RUST_LOG", "error")
        .output()
        .expect("run tessera");
    assert!(!json.status.success());
    let stderr = String::from_utf8_lossy(&json.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("a JSON log line in {stderr}"));
    assert!(line.contains("\"level\":\"ERROR\""), "{line}");
    assert!(line.contains("no command given"), "{line}");
}

#[test]
fn threads_must_be_at_least_one() {
    let out = tessera()
        .args(["--threads", "0", "keygen", "--show", "none.key"])
        .output()
        .expect("run tessera");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--threads"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_log_format_is_rejected() {
    let out = tessera()
        .args(["--log-format", "xml"])
        .output()
        .expect("run tessera");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'xml'"));
}
