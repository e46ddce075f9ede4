//! Spawning the function's process so that it never outlives the watchdog.
//!
//! Owns: building the `Command` for `fprocess` (run directly, no shell). Invariant: every
//! child is spawned with `kill_on_drop(true)` and, on Linux, `PR_SET_PDEATHSIG = SIGKILL`, so
//! a child dies with the watchdog whether it exits cleanly, panics or is SIGKILLed. This is
//! the only module with `unsafe` (one `pre_exec` hook).

use std::process::Stdio;

use tokio::process::{Child, Command};

use super::WatchdogError;

/// A command for `argv` (non-empty) that dies with the watchdog.
pub fn command(argv: &[String]) -> Command {
    let (program, args) = match argv.split_first() {
        Some((p, rest)) => (p.as_str(), rest),
        None => ("", &[][..]),
    };
    let mut cmd = Command::new(program);
    cmd.args(args).kill_on_drop(true);
    die_with_parent(&mut cmd);
    cmd
}

/// Starts the long-running function process of http mode: stdout and stderr inherited.
pub fn spawn_server(argv: &[String]) -> Result<Child, WatchdogError> {
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

/// Asks the kernel to SIGKILL the child when its parent dies (Linux only).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: prctl, getppid and _exit are; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}
