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

/// Durations from the command line are bounded where they are parsed: a huge value is a clear usage
/// error (status 2), not an overflow panic when a deadline is computed from it.
#[test]
fn out_of_range_durations_are_usage_errors() {
    let huge = u64::MAX.to_string();
    for args in [
        vec![
            "relay",
            "serve",
            "--data",
            "unused",
            "--idle-timeout",
            &huge,
        ],
        vec![
            "relay",
            "serve",
            "--data",
            "unused",
            "--message-ttl-days",
            &huge,
        ],
        vec![
            "relay",
            "invite",
            "--data",
            "unused",
            "--valid-hours",
            &huge,
        ],
        vec!["tee-t", "--session-timeout", &huge],
        vec!["mcp", "stdio", "--request-timeout", &huge, "--", "true"],
        vec![
            "channel",
            "serve",
            "--key",
            "unused",
            "--handshake-timeout",
            "0",
        ],
    ] {
        let out = tessera().args(&args).output().expect("run tessera");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("is not in"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// `relay invite` mints into the relay's existing database only: a mistyped `--data` is an error and
/// creates nothing.
#[test]
fn an_invite_needs_the_relays_database() {
    let data = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("no-relay-{}", std::process::id()));
    let out = tessera()
        .args(["relay", "invite", "--data"])
        .arg(&data)
        .output()
        .expect("run tessera");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no relay database"), "{stderr}");
    assert!(!data.exists(), "created {}", data.display());
}
