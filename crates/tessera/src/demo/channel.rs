//! The channel part: an echo server and a client, both real, over ws://127.0.0.1.

use std::time::Duration;

use anyhow::{Context, ensure};
use tessera_channel::{AnyKey, ChannelConfig, Connector, Identity, Server};
use tessera_session::{Registry, RegistryConfig};

use super::short_hex;

pub async fn run() -> anyhow::Result<()> {
    let server_identity = Identity::generate();
    let server_registry = Registry::new(RegistryConfig::new("demo-channel-server"));
    let (server, listener) = Server::new(
        server_identity,
        AnyKey,
        ChannelConfig::default(),
        server_registry.clone(),
    );
    let serving = tessera_channel::serve("127.0.0.1:0".parse()?, &server).await?;
    let echo = tokio::spawn(tessera_channel::echo(listener));
    let url = format!("ws://{}/", serving.local_addr());
    println!("  server listening on {url}, key {}", server.public_key());

    let client_identity = Identity::generate();
    let client_registry = Registry::new(RegistryConfig::new("demo-channel-client"));
    let connector = Connector::new(client_registry.clone(), ChannelConfig::default());
    let mut channel = connector
        .connect(&url, server.public_key(), &client_identity)
        .await
        .context("handshake with the pinned server key")?;
    println!(
        "  handshake done: server proved key {}, session {}, channel binding {}",
        channel.peer(),
        channel.session_id(),
        short_hex(channel.channel_binding())
    );
    for message in [
        "hello over Noise XX",
        "every frame is a Noise transport message",
    ] {
        channel.send(message.as_bytes().to_vec()).await?;
        let reply = channel
            .recv()
            .await?
            .context("the server closed the channel")?;
        ensure!(reply.as_ref() == message.as_bytes(), "the echo differs");
        println!("  sent and received back, decrypted: {message:?}");
    }
    println!(
        "  server sessions while connected: {}",
        server_registry.len()
    );

    // A client that pins another key is refused before it says who it is.
    let wrong_pin = Identity::generate().public_key();
    match connector.connect(&url, wrong_pin, &client_identity).await {
        Ok(_) => anyhow::bail!("a wrongly pinned server key was accepted"),
        Err(e) => println!("  a client pinning the wrong server key is refused: {e}"),
    }

    channel.close().await;
    let report = serving.shutdown(Duration::from_secs(2)).await;
    echo.abort();
    tokio::time::timeout(Duration::from_secs(5), client_registry.wait_empty())
        .await
        .context("client sessions did not end")?;
    ensure!(server_registry.is_empty(), "server sessions left behind");
    println!(
        "  closed; server shutdown: {} finished, {} cancelled; sessions left: server {}, client {}",
        report.finished,
        report.cancelled,
        server_registry.len(),
        client_registry.len()
    );
    Ok(())
}
