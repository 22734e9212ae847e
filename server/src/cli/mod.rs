//! Commands of `askee-server` that the library serves (the binary's own
//! commands live beside `main.rs`): the discovery crawl and the release
//! repository.

pub mod discovery;
pub mod release;
