pub mod client;
pub mod npm;
