//! Spawning and signalling replica processes, so that none outlives the gateway.
//!
//! Owns the OS-level guarantees: every replica is spawned with `kill_on_drop`, stdin null,
//! stdout and stderr piped, in its own process group (so a stop reaches the watchdog and the
//! function processes it forked), and on Linux with `PR_SET_PDEATHSIG(SIGKILL)`.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
//! Runtime threads may come and go (blocking pool), so every spawn happens on one dedicated,
//! never-exiting spawner thread that enters the caller's runtime to register the child.
//! The `unsafe` parts (`prctl` in `pre_exec`, `kill(2)` on a group) are in `sys::process`.

use std::io;
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use tokio::process::{Child, Command};
use tokio::sync::oneshot;

struct SpawnRequest {
    command: Command,
    runtime: tokio::runtime::Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

/// Spawns `command` as a replica process (see the module doc for the settings applied).
pub(super) async fn spawn(mut command: Command) -> io::Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    crate::sys::process::die_with_parent(&mut command);

    let (reply, rx) = oneshot::channel();
    let request = SpawnRequest {
        command,
        runtime: tokio::runtime::Handle::current(),
        reply,
    };
    spawner()?
        .lock()
        .map_err(|_| io::Error::other("spawner mutex poisoned"))?
        .send(request)
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    rx.await
        .map_err(|_| io::Error::other("spawner thread dropped the request"))?
}

fn spawner() -> io::Result<&'static Mutex<mpsc::Sender<SpawnRequest>>> {
    if let Some(s) = SPAWNER.get() {
        return Ok(s);
    }
    let (tx, rx) = mpsc::channel::<SpawnRequest>();
    let tx = Mutex::new(tx);
    // Two racing first callers may both build a thread; the loser's sender is dropped here,
    // so its thread ends at once without ever having spawned a child.
    if SPAWNER.set(tx).is_ok() {
        std::thread::Builder::new()
            .name("faasgate-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    let _enter = req.runtime.enter();
                    let _ = req.reply.send(req.command.spawn());
                }
            })?;
    }
    SPAWNER
        .get()
        .ok_or_else(|| io::Error::other("spawner not initialised"))
}
