//! `--rules FILE`: read when the proxy starts, and again on SIGHUP while it runs — a change of policy
//! without dropping a session. A file that does not read or parse is reported and the rules in force stay.

use std::path::Path;

use anyhow::Context;
use tessera_mcp::rules::{RuleSet, Rules};
use tessera_session::CancellationToken;
use tokio_util::sync::DropGuard;

/// The most a rules file may hold (1,000 rules fit in far less).
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// The rules of `path`, or none without a path.
pub(super) fn load(path: Option<&Path>) -> anyhow::Result<RuleSet> {
    match path {
        Some(path) => Ok(RuleSet::new(read(path)?)),
        None => Ok(RuleSet::none()),
    }
}

fn read(path: &Path) -> anyhow::Result<Rules> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .with_context(|| format!("reading the rules file {}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading the rules file {}", path.display()))?;
    anyhow::ensure!(
        text.len() as u64 <= MAX_FILE,
        "the rules file {} is larger than {MAX_FILE} bytes",
        path.display()
    );
    Rules::from_json(&text).with_context(|| format!("in the rules file {}", path.display()))
}

/// With a rules file: installs the SIGHUP handler at once (from here on a SIGHUP reloads instead of
/// ending the process) and starts the task that reads `path` into `rules` on each one. The task stops
/// when the returned guard is dropped.
pub(super) fn reload_on_hangup(
    path: Option<&Path>,
    rules: &RuleSet,
) -> anyhow::Result<Option<DropGuard>> {
    use tokio::signal::unix::{SignalKind, signal};
    let Some(path) = path else {
        return Ok(None);
    };
    let mut hangups = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let stop = CancellationToken::new();
    let (path, rules, stopped) = (path.to_owned(), rules.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stopped.cancelled() => return,
                hangup = hangups.recv() => if hangup.is_none() { return },
            }
            match read(&path) {
                Ok(new) => {
                    let count = new.len();
                    rules.replace(new);
                    tracing::info!(path = %path.display(), rules = count, "rules reloaded");
                }
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "rules not reloaded; the rules in force stay"
                ),
            }
        }
    });
    Ok(Some(stop.drop_guard()))
}
