//! Interoperability: a Python client written from `docs/channel.md` alone (`noiseprotocol` +
//! `websockets` from PyPI) runs a full handshake and an encrypted echo against the Rust server, in both
//! protocol versions (ChaChaPoly and AESGCM).
//!
//! Set-up: the test creates a virtual environment under Cargo's target tmp dir
//! (`python3 -m venv`, then `pip install noiseprotocol websockets`), reused on later runs. It needs
//! `python3` and network access to PyPI. Set `TESSERA_SKIP_PYTHON=1` to skip it on machines without them.

use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_channel::{Admission, AdmissionRequest, ChannelConfig, Identity, Server, Suite, serve};

fn venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("channel-python-venv");
    let python = dir.join("bin").join("python");
    let ready = dir.join(".tessera-ready");
    if !ready.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&dir)
            .status()
            .expect("python3 must be installed to run this test (or set TESSERA_SKIP_PYTHON=1)");
        assert!(status.success(), "python3 -m venv failed");
        let status = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "noiseprotocol",
                "websockets",
            ])
            .status()
            .expect("pip");
        assert!(
            status.success(),
            "pip install noiseprotocol websockets failed (network to PyPI needed)"
        );
        std::fs::write(&ready, b"ok").expect("marker");
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_from_the_docs_handshakes_and_echoes() {
    if std::env::var_os("TESSERA_SKIP_PYTHON").is_some() {
        eprintln!("skipped: TESSERA_SKIP_PYTHON is set");
        return;
    }
    let python = tokio::task::spawn_blocking(venv).await.expect("venv");

    let identity = Identity::generate();
    let policy = |req: &AdmissionRequest<'_>| {
        if req.auth_payload == b"python-auth" {
            Admission::Accept {
                welcome: b"welcome, python".to_vec(),
            }
        } else {
            Admission::reject("bad auth payload")
        }
    };
    let registry = tessera_session::Registry::new(tessera_session::RegistryConfig::new("py"));
    let (server, mut listener) =
        Server::new(identity.clone(), policy, ChannelConfig::default(), registry);
    let serving = serve("127.0.0.1:0".parse().expect("addr"), &server)
        .await
        .expect("bind");
    let url = format!("ws://{}/", serving.local_addr());

    // Each accepted channel reports what its handshake established, then echoes.
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(channel) = listener.accept().await {
            let _ = seen_tx
                .send((
                    channel.peer(),
                    *channel.channel_binding(),
                    channel.session_id(),
                    channel.info().suite,
                ))
                .await;
            tokio::spawn(tessera_channel::echo_channel(channel));
        }
    });

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/channel_client.py");
    let key = identity.public_key().to_string();
    // Both protocol versions (docs/channel.md §3), one after the other, against the same server.
    for suite in Suite::ALL {
        let (python, script, url, key) = (python.clone(), script.clone(), url.clone(), key.clone());
        let output = tokio::task::spawn_blocking(move || {
            Command::new(python)
                .arg(script)
                .arg(url)
                .arg(key)
                .arg(suite.version().to_string())
                .output()
                .expect("run python")
        })
        .await
        .expect("join");
        assert!(
            output.status.success(),
            "python client ({suite:?}) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let (peer, binding, session_id, seen_suite) =
            seen_rx.recv().await.expect("server saw the client");
        assert_eq!(seen_suite, suite);
        // The Rust server and the Python client agree on everything the handshake established.
        assert!(
            stdout.contains(&format!("\"client_public\": \"{peer}\"")),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!(
                "\"channel_binding\": \"{}\"",
                hex::encode(binding)
            )),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("\"session_id\": \"{session_id}\"")),
            "{stdout}"
        );
        assert!(
            stdout.contains("\"welcome\": \"welcome, python\""),
            "{stdout}"
        );
        assert!(stdout.contains("\"echoed\": 3"), "{stdout}");
        assert!(
            stdout.contains(&format!("\"version\": {}", suite.version())),
            "{stdout}"
        );
    }
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        server.registry().wait_empty(),
    )
    .await
    .expect("the python session ended");
}
