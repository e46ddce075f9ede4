//! One replica process, from spawn to reaping: the task that owns its `Child`.
//!
//! Owns the process of one instance (`<name>-<random>`): spawns the watchdog with the replica
//! environment and nothing else ([`replica_command`] clears the inherited one; the list is in
//! `spec`'s module doc), forwards every stdout/stderr line to the function's logs, learns the
//! address from the first stderr line starting with [`LISTENING_PREFIX`] (bounded by
//! [`LISTEN_TIMEOUT`]), then probes `/_/health` (every 50 ms until the first 200, then every
//! second) and reports each change to its supervisor as an [`Event`]. For [`EARLY_EXIT`]
//! after the spawn it also keeps the last stderr lines ([`StderrTail`]); a process that ends
//! within that window is a crash at start, and its warning carries them (`stderr=`).
//!
//! Invariants: the task always reaps its child before it ends (stop: SIGTERM to the process
//! group, SIGKILL after [`TERM_GRACE`]; crash: SIGKILL to what the replica left in its group),
//! and its pid is listed in the registry exactly while the process may be alive. It ends with
//! [`EventKind::Exited`] unless it was asked to stop. A dropped stop sender counts as a stop,
//! so a supervisor that goes away takes its processes with it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::health;
use super::logs::LogBuffer;
use super::process;
use super::replica_secrets::{SecretsSetup, Staged};
use super::spec::{self, ReplicaSpec};
use super::tail::StderrTail;
use crate::watchdog::LISTENING_PREFIX;

/// How long a new process may take to print its address.
pub(crate) const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped process may take to exit after SIGTERM before SIGKILL.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(5);
/// Probe period until the first healthy answer.
pub(crate) const PROBE_FAST: Duration = Duration::from_millis(50);
/// Probe period once the replica has been healthy.
pub(crate) const PROBE_STEADY: Duration = Duration::from_secs(1);
/// Consecutive failed probes that take a healthy replica out of rotation (one lost probe
/// under load should not empty a function).
pub(crate) const UNHEALTHY_AFTER: u32 = 2;
/// How long the log pump lets a replica's output pile up before reading it again, once the
/// replica is listening. A replica logs a line per request (as of-watchdog does): read line
/// by line, that was a wake-up, an `epoll_wait` and a `read` of the gateway's per request
/// (measured under the load test: ~0.5 of each per request). 10 ms of lines fit in the
/// pipe (64 KiB) up to ~6 MB/s of logs, and a line still shows within 10 ms.
pub(crate) const LOG_BATCH: Duration = Duration::from_millis(10);
/// Read buffer of the log pump: one read takes what a batch window piles up.
const LOG_READ_BYTES: usize = 64 * 1024;
/// A process that ends this soon after its spawn crashed at start (an interpreter failing on
/// a missing file or an import, a server failing to bind): its warning carries its last
/// stderr lines. Long enough for a slow interpreter's start, short enough that a replica
/// that served for a while stops recording (its lines are in the function's logs).
pub(super) const EARLY_EXIT: Duration = Duration::from_secs(5);
/// How long the warning of a crash at start waits for the rest of its stderr (end of file).
const TAIL_WAIT: Duration = Duration::from_secs(1);

/// Live processes of one function: instance id -> pid.
pub(super) type Pids = Arc<Mutex<BTreeMap<Arc<str>, u32>>>;

/// What an instance reports to its supervisor.
#[derive(Debug)]
pub(crate) struct Event {
    pub id: Arc<str>,
    pub kind: EventKind,
}

#[derive(Debug)]
pub(crate) enum EventKind {
    /// The process printed its address.
    Listening(SocketAddr),
    /// `/_/health` answered 200 (first time, or again after `Unhealthy`).
    Healthy,
    /// Probes failed [`UNHEALTHY_AFTER`] times in a row.
    Unhealthy,
    /// The process is gone (crash, failed start, no address in time); it has been reaped.
    Exited(String),
}

/// What every instance of one function shares.
#[derive(Clone)]
pub(crate) struct InstanceContext {
    pub command: Arc<[OsString]>,
    pub logs: Arc<LogBuffer>,
    pub events: mpsc::UnboundedSender<Event>,
    pub pids: Pids,
    /// How replicas with secrets get them.
    pub secrets: Arc<SecretsSetup>,
}

/// A running instance task: send on `stop` (or drop it) to stop the process.
pub(crate) struct InstanceHandle {
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<()>,
}

// === impl InstanceContext ===

impl InstanceContext {
    /// Starts one instance of `spec` named `id`.
    pub(crate) fn spawn_instance(&self, id: Arc<str>, spec: Arc<ReplicaSpec>) -> InstanceHandle {
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(self.clone().run(id, spec, stop_rx));
        InstanceHandle { stop, task }
    }

    async fn run(self, id: Arc<str>, spec: Arc<ReplicaSpec>, mut stop: oneshot::Receiver<()>) {
        let Some((program, args)) = self.command.split_first() else {
            self.exited(&id, "no watchdog command configured".into());
            return;
        };
        let extra = match spec::instance_env(&spec.env) {
            Ok(extra) => extra,
            Err(e) => {
                self.exited(&id, format!("allocating a port: {e}"));
                return;
            }
        };
        let mut extra = extra;
        let (mut staged, command) = if spec.secrets.is_empty() {
            (None, replica_command(program, args, &spec, extra))
        } else {
            let staged = match self.secrets.stage(&id, &spec.secrets) {
                Ok(staged) => staged,
                Err(e) => {
                    self.exited(&id, format!("staging the function's secrets: {e}"));
                    return;
                }
            };
            let (program, args, env) = self.secrets.wrap(program, args, &staged);
            extra.extend(env);
            let command = replica_command(&program, &args, &spec, extra);
            (Some(staged), command)
        };
        let mut child = match process::spawn(command).await {
            Ok(child) => child,
            Err(e) => {
                self.exited(&id, format!("spawn {}: {e}", program.to_string_lossy()));
                return;
            }
        };
        let Some(pid) = child.id() else {
            let status = child.wait().await;
            self.exited(&id, format!("exited at once: {status:?}"));
            return;
        };
        let started = Instant::now();
        self.pids
            .lock()
            .expect("pid registry mutex poisoned")
            .insert(id.clone(), pid);

        let (addr_tx, addr_rx) = oneshot::channel();
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(
                out,
                self.logs.clone(),
                id.clone(),
                None,
                None,
            ));
        }
        let early = EarlyTail {
            tail: StderrTail::new(),
            until: started + EARLY_EXIT,
        };
        let stderr = child.stderr.take().map(|err| {
            tokio::spawn(forward_lines(
                err,
                self.logs.clone(),
                id.clone(),
                Some(addr_tx),
                Some(early),
            ))
        });

        // In a mount namespace the replica copied its secrets before it could listen.
        let drop_staged_at_listen = self.secrets.copies_at_start();
        let outcome = self
            .supervise(
                &id,
                &mut child,
                &mut stop,
                addr_rx,
                &mut staged,
                drop_staged_at_listen,
            )
            .await;
        let at_start = started.elapsed() < EARLY_EXIT;
        match outcome {
            Outcome::Stop => terminate(&mut child, pid).await,
            Outcome::Kill(reason) => {
                terminate(&mut child, pid).await;
                self.forget(&id);
                let tail = early_tail(at_start, stderr).await;
                self.exited_with(&id, reason, tail);
                return;
            }
            Outcome::Exited(status) => {
                // Whatever the replica forked may still run in its group (this also closes
                // the stderr it may hold, so the tail below reaches its end).
                let _ = crate::sys::process::signal_group(pid, libc::SIGKILL);
                self.forget(&id);
                let tail = early_tail(at_start, stderr).await;
                self.exited_with(&id, status, tail);
                return;
            }
        }
        self.forget(&id);
    }

    async fn supervise(
        &self,
        id: &Arc<str>,
        child: &mut Child,
        stop: &mut oneshot::Receiver<()>,
        addr_rx: oneshot::Receiver<SocketAddr>,
        staged: &mut Option<Staged>,
        drop_staged_at_listen: bool,
    ) -> Outcome {
        let addr = tokio::select! {
            biased;
            _ = &mut *stop => return Outcome::Stop,
            status = child.wait() => return Outcome::Exited(describe(status)),
            addr = tokio::time::timeout(LISTEN_TIMEOUT, addr_rx) => match addr {
                Ok(Ok(addr)) => addr,
                Ok(Err(_)) => return Outcome::Kill("stderr closed before the address was printed".into()),
                Err(_) => return Outcome::Kill(format!("no address printed within {LISTEN_TIMEOUT:?}")),
            },
        };
        self.send(id, EventKind::Listening(addr));
        if drop_staged_at_listen {
            staged.take();
        }

        let mut healthy = false;
        let mut ever_healthy = false;
        let mut failures = 0u32;
        loop {
            let period = if ever_healthy {
                PROBE_STEADY
            } else {
                PROBE_FAST
            };
            let probe = async {
                tokio::time::sleep(period).await;
                health::probe(addr).await
            };
            tokio::select! {
                biased;
                _ = &mut *stop => return Outcome::Stop,
                status = child.wait() => return Outcome::Exited(describe(status)),
                ok = probe => {
                    if ok {
                        failures = 0;
                        ever_healthy = true;
                        if !healthy {
                            healthy = true;
                            self.send(id, EventKind::Healthy);
                        }
                    } else if healthy {
                        failures += 1;
                        if failures >= UNHEALTHY_AFTER {
                            healthy = false;
                            self.send(id, EventKind::Unhealthy);
                        }
                    }
                }
            }
        }
    }

    fn send(&self, id: &Arc<str>, kind: EventKind) {
        // The supervisor is gone only when it stops: nothing to tell then.
        let _ = self.events.send(Event {
            id: id.clone(),
            kind,
        });
    }

    fn exited(&self, id: &Arc<str>, reason: String) {
        self.exited_with(id, reason, None);
    }

    /// Reports an exit; `stderr` is the tail of a crash at start, the only clue to its cause
    /// in the gateway's log (as one escaped string, so the log keeps one line per event).
    fn exited_with(&self, id: &Arc<str>, reason: String, stderr: Option<String>) {
        match &stderr {
            Some(tail) => {
                tracing::warn!(instance = %id, %reason, stderr = ?tail, "replica exited at start")
            }
            None => tracing::warn!(instance = %id, %reason, "replica exited"),
        }
        self.send(id, EventKind::Exited(reason));
    }

    fn forget(&self, id: &Arc<str>) {
        self.pids
            .lock()
            .expect("pid registry mutex poisoned")
            .remove(id);
    }
}

/// The stderr tail of a process while it may still crash at start.
struct EarlyTail {
    tail: StderrTail,
    until: Instant,
}

enum Outcome {
    /// Asked to stop: terminate gracefully, report nothing.
    Stop,
    /// Unusable (no address): terminate and report.
    Kill(String),
    /// Exited on its own: already reaped.
    Exited(String),
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => format!("process exited: {s}"),
        Err(e) => format!("waiting for process: {e}"),
    }
}

/// `program args` with exactly the environment of `spec` then `extra` (per replica): the
/// gateway's own environment is cleared, so none of its variables reaches the replica.
fn replica_command(
    program: &OsStr,
    args: &[OsString],
    spec: &ReplicaSpec,
    extra: Vec<(OsString, OsString)>,
) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .envs(extra);
    command
}

/// The last stderr lines of a process that ended `at_start` (within [`EARLY_EXIT`]): what its
/// log pump kept, once the pipe is closed (bounded by [`TAIL_WAIT`]). None otherwise.
async fn early_tail(
    at_start: bool,
    stderr: Option<JoinHandle<Option<StderrTail>>>,
) -> Option<String> {
    let pump = stderr.filter(|_| at_start)?;
    match tokio::time::timeout(TAIL_WAIT, pump).await {
        Ok(Ok(Some(tail))) if !tail.is_empty() => Some(tail.text()),
        _ => None,
    }
}

/// SIGTERM to the group, SIGKILL after [`TERM_GRACE`], reap, then SIGKILL to any straggler
/// left in the group.
async fn terminate(child: &mut Child, pgid: u32) {
    if let Err(e) = crate::sys::process::signal_group(pgid, libc::SIGTERM) {
        tracing::debug!(pgid, error = %e, "SIGTERM failed");
    }
    if tokio::time::timeout(TERM_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = crate::sys::process::signal_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
    }
    let _ = crate::sys::process::signal_group(pgid, libc::SIGKILL);
}

/// Sends each line of `pipe` to `logs`; on stderr, also the first address line to `addr` and,
/// until `early.until`, every line to `early.tail`, which it returns at the end of the pipe.
async fn forward_lines<R: AsyncRead + Unpin>(
    pipe: R,
    logs: Arc<LogBuffer>,
    id: Arc<str>,
    mut addr: Option<oneshot::Sender<SocketAddr>>,
    mut early: Option<EarlyTail>,
) -> Option<StderrTail> {
    let mut reader = BufReader::with_capacity(LOG_READ_BYTES, pipe);
    let mut buf = Vec::with_capacity(256);
    loop {
        if addr.is_none() && reader.buffer().is_empty() {
            // Everything read so far is pushed: let the next lines pile up (see LOG_BATCH).
            tokio::time::sleep(LOG_BATCH).await;
        }
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return early.map(|e| e.tail),
            Ok(_) => {}
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        if let Some(e) = &mut early {
            if Instant::now() < e.until {
                // Copies into a buffer allocated at spawn: nothing allocated per line.
                e.tail.push(&buf);
            } else {
                // Past the start: the replica's per-request lines pay nothing more.
                early = None;
            }
        }
        // Valid UTF-8 (nearly every line) is copied as is; `from_utf8_lossy` walks it in
        // chunks first, three times the instructions of a plain check.
        let line = match std::str::from_utf8(&buf) {
            Ok(s) => s.to_owned(),
            Err(_) => String::from_utf8_lossy(&buf).into_owned(),
        };
        if addr.is_some() {
            if let Some(parsed) = parse_listening(&line) {
                if let Some(tx) = addr.take() {
                    let _ = tx.send(parsed);
                }
            }
        }
        logs.push(&id, line);
    }
}

/// The address in a `LISTENING_PREFIX ip:port` line.
pub(crate) fn parse_listening(line: &str) -> Option<SocketAddr> {
    line.strip_prefix(LISTENING_PREFIX)?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_listening_line() {
        let line = format!("{LISTENING_PREFIX}127.0.0.1:4321");
        assert_eq!(
            parse_listening(&line),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        assert_eq!(
            parse_listening(&format!("{line} \r")),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        assert_eq!(parse_listening("listening on 127.0.0.1:1"), None);
        assert_eq!(parse_listening(&format!("{LISTENING_PREFIX}nope")), None);
    }

    /// The spawned program sees the spec's variables and the per-replica ones, nothing of
    /// the test process's, and finds `env` through the replica's PATH.
    #[tokio::test]
    async fn a_replica_gets_exactly_its_environment() {
        let d = crate::model::types::FunctionDeployment {
            service: "f".into(),
            env_process: "cat".into(),
            env_vars: Some([("A".to_string(), "1".to_string())].into()),
            ..Default::default()
        };
        let spec = spec::replica_spec(&d, Some(OsStr::new("/home/fn")), Vec::new());
        let extra = vec![(OsString::from("PORT"), OsString::from("1234"))];
        let out = replica_command(OsStr::new("env"), &[], &spec, extra)
            .output()
            .await
            .expect("run env");
        assert!(out.status.success(), "{out:?}");
        let printed: BTreeMap<String, String> = String::from_utf8(out.stdout)
            .expect("utf-8")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let want: BTreeMap<String, String> = [
            ("PATH", spec::REPLICA_PATH),
            ("HOME", "/home/fn"),
            ("A", "1"),
            ("fprocess", "cat"),
            ("port", "0"),
            ("bind_address", "127.0.0.1"),
            ("PORT", "1234"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // Else the test proves nothing: the test process has variables a replica must not get
        // (under cargo, a dozen CARGO_*).
        assert!(std::env::vars_os().any(|(k, _)| !want.contains_key(&*k.to_string_lossy())));
        // Names first, so that a failure shows no value of the test process's (CI tokens).
        assert_eq!(
            printed.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        assert_eq!(printed, want);
    }
}
