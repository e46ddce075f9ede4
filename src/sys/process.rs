//! Child processes that never outlive their parent, and signals to a process group.
//!
//! Both the local provider (replicas) and the watchdog (the function's process) spawn
//! children through [`die_with_parent`]: on Linux the kernel SIGKILLs the child when the
//! thread that forked it exits (`PR_SET_PDEATHSIG`), so the caller must fork from a thread
//! that lives as long as the process (the local provider keeps one spawner thread for this).

use std::io;

use tokio::process::Command;

/// Asks the kernel to SIGKILL `command`'s child when its parent dies (Linux only).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe
    // calls are allowed: prctl, getppid and _exit are; it allocates nothing, takes no lock
    // and touches no state shared with the parent's other threads.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Elsewhere the child is only killed on drop (`kill_on_drop`).
#[cfg(not(target_os = "linux"))]
pub(crate) fn die_with_parent(_command: &mut Command) {}

/// Sends `signal` to the process group `pgid` (a replica and everything it forked).
/// `ESRCH` (the group is gone) is not an error.
#[allow(unsafe_code)]
pub(crate) fn signal_group(pgid: u32, signal: libc::c_int) -> io::Result<()> {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return Err(io::Error::other("pid out of range"));
    };
    if pgid <= 1 {
        return Err(io::Error::other("refusing to signal process group <= 1"));
    }
    // SAFETY: kill(2) takes plain integers and has no memory-safety preconditions; a negative
    // pid addresses exactly the process group, and pgid > 1 excludes "every process".
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == -1 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}
