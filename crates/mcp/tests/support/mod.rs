pub mod answer;
pub mod client;
pub mod http;
pub mod hung;
pub mod npm;
pub mod polling;
pub mod proxy;
pub mod stdio_server;
