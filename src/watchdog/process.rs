//! Spawning the function's process so that it never outlives the watchdog.
//!
//! Owns: building the `Command` for `fprocess` (run directly, no shell). Invariant: every
//! child is spawned with `kill_on_drop(true)` and, on Linux, `PR_SET_PDEATHSIG = SIGKILL`, so
//! a child dies with the watchdog whether it exits cleanly, panics or is SIGKILLed
//! (`sys::process::die_with_parent`).

use std::process::Stdio;

use tokio::process::{Child, Command};

use super::WatchdogError;

/// A command for `argv` (non-empty) that dies with the watchdog.
pub(crate) fn command(argv: &[String]) -> Command {
    let (program, args) = match argv.split_first() {
        Some((p, rest)) => (p.as_str(), rest),
        None => ("", &[][..]),
    };
    let mut cmd = Command::new(program);
    cmd.args(args).kill_on_drop(true);
    crate::sys::process::die_with_parent(&mut cmd);
    cmd
}

/// Starts the long-running function process of http mode: stdout and stderr inherited.
pub(crate) fn spawn_server(argv: &[String]) -> Result<Child, WatchdogError> {
    command(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| WatchdogError::Spawn {
            program: argv.join(" "),
            source,
        })
}
