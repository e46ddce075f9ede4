//! A tiny, fast HTTP/1.1 upstream for the load test (`loadtest/run`): the bare baseline
//! ("direct") and the server every proxy reaches in the end.
//!
//! `GET` (any path) answers a fixed 13-byte body; any other method echoes the request body
//! back, streamed. Keep-alive, `TCP_NODELAY`, no logging. Prints `listening on <addr>` on
//! stdout once bound, and runs until killed.
//!
//!     cargo run --release --example upstream -- [--listen 127.0.0.1:0] [--threads N]
#![allow(clippy::unwrap_used)] // test and tool code: a failed unwrap is a failed run

#[path = "../tests/support/inproc.rs"]
mod inproc;

use std::io::Write;
use std::net::SocketAddr;

fn main() -> std::io::Result<()> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut threads = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match arg.as_str() {
            "--listen" => listen = value("--listen").parse().expect("--listen ADDR"),
            "--threads" => threads = value("--threads").parse().expect("--threads N"),
            other => panic!("unknown argument {other:?}"),
        }
    }
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        rt.worker_threads(threads);
    }
    rt.enable_all().build()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("listening on {}", listener.local_addr()?);
        std::io::stdout().flush()?;
        inproc::serve_upstream(listener).await;
        Ok(())
    })
}
