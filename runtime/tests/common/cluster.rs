//! Real clusters on loopback for tests: each "host" is a session directory of its own, its
//! daemons started with the `prism` binary; dropping a [`Host`] stops its daemons (and kills
//! any that linger), pass or fail.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The `prism` command to run: `PRISM_TEST_PROGRAM` if set (a test binary that acts as the CLI
/// when `PRISM_TEST_AS_CLI` is set), else this build's `prism` binary.
pub fn program() -> PathBuf {
    std::env::var_os("PRISM_TEST_PROGRAM")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_BIN_EXE_prism").map(PathBuf::from))
        .expect("the prism binary (or PRISM_TEST_PROGRAM)")
}

/// In a process a node started from this test binary (a worker of the job): serves as the
/// worker and never returns.
pub fn serve_if_worker() {
    if std::env::var_os("PRISM_ROLE").is_some() {
        let _ = prism::init();
        unreachable!("a worker never returns from init");
    }
}

/// For a test binary that doubles as the `prism` command: started as the command
/// (`PRISM_TEST_AS_CLI`), runs it and exits; otherwise has the hosts it starts run this binary
/// as `prism`. Call it first in `main`, before any thread starts.
pub fn be_the_cli() {
    if std::env::var_os("PRISM_TEST_AS_CLI").is_some() {
        std::process::exit(match prism::cli::main() {
            std::process::ExitCode::SUCCESS => 0,
            _ => 1,
        });
    }
    // SAFETY: called first in `main`, before any thread of this process starts.
    unsafe {
        std::env::set_var(
            "PRISM_TEST_PROGRAM",
            std::env::current_exe().expect("the test's path"),
        )
    };
}

/// One host's session directory; dropping it stops that host's daemons.
pub struct Host {
    /// The session directory.
    pub dir: PathBuf,
    /// Its daemons beat and time out at the defaults (else fast: 100 ms beats, 1 s timeout).
    default_timing: bool,
}

impl Host {
    pub fn new(name: &str) -> Host {
        let dir =
            std::env::temp_dir().join(format!("prism-cli-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Host {
            dir,
            default_timing: false,
        }
    }

    /// A host whose daemons keep the default heartbeat and node timeout.
    pub fn with_default_timing(name: &str) -> Host {
        let mut host = Host::new(name);
        host.default_timing = true;
        host
    }

    pub fn prism(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("the prism binary runs")
    }

    /// `prism ARGS` on this host, started in the background (its output piped).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the prism binary runs")
    }

    /// The `prism ARGS` command on this host.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(program());
        command
            .args(args)
            .env("PRISM_TEST_AS_CLI", "1")
            .env("PRISM_SESSION_DIR", &self.dir)
            .env_remove("PRISM_ADDRESS")
            .env_remove("PRISM_TOKEN");
        if self.default_timing {
            command
                .env_remove("PRISM_HEARTBEAT_MS")
                .env_remove("PRISM_NODE_TIMEOUT_MS");
        } else {
            command
                .env("PRISM_HEARTBEAT_MS", "100")
                .env("PRISM_NODE_TIMEOUT_MS", "1000");
        }
        command
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.prism(args);
        assert!(
            out.status.success(),
            "prism {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `prism start --head` on 127.0.0.1 (the dashboard on any free port), with `extra` flags.
    pub fn start_head(&self, extra: &[&str]) -> String {
        self.ok(&head_args(extra))
    }

    /// `prism start` joining the head at `addr` from `ip`, with `extra` flags.
    pub fn join(&self, addr: &str, token: &str, ip: &str, extra: &[&str]) -> String {
        let mut args = vec!["start", "--address", addr, "--token", token, "--host", ip];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).expect("a session file")
    }

    /// SIGKILLs this host's head and starts it again on the address `addr` with `extra` flags
    /// (the old process may hold the port for a moment after the kill).
    pub fn restart_head(&self, addr: &str, extra: &[&str]) -> Result<(), String> {
        for pid in self.daemons() {
            // SAFETY: kill(2) on the head daemon this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = std::fs::remove_file(self.dir.join("daemons").join(pid.to_string()));
        }
        let port = addr.rsplit(':').next().unwrap_or("0");
        let mut args = vec!["--port", port];
        args.extend_from_slice(extra);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.prism(&head_args(&args));
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let why = String::from_utf8_lossy(&out.stderr);
                return Err(format!("the head does not start again: {why}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every daemon log of this host, each under its file name (for a failing assertion).
    pub fn logs(&self) -> String {
        logs_in(&self.dir)
    }

    /// The pids of the daemons this host recorded.
    pub fn daemons(&self) -> Vec<i32> {
        std::fs::read_dir(self.dir.join("daemons"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Every daemon log of the host whose session directory is `dir`, each under its file name.
pub fn logs_in(dir: &std::path::Path) -> String {
    let mut logs = String::new();
    for entry in std::fs::read_dir(dir.join("logs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        logs += &format!("--- {}\n{text}", entry.file_name().to_string_lossy());
    }
    logs
}

/// A head on 127.0.0.1 named `head` with `cpus` CPUs, in a host named `name`: the host, the
/// head's address and the cluster's token.
pub fn head(name: &str, cpus: &str) -> (Host, String, String) {
    let head = Host::new(name);
    head.start_head(&["--num-cpus", cpus, "--name", "head", "--port", "0"]);
    let addr = head.file("address");
    let token = head.file("token");
    (head, addr, token)
}

pub fn head_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "start",
        "--head",
        "--dashboard-port",
        "0",
        "--host",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    args
}

impl Drop for Host {
    fn drop(&mut self) {
        let pids = self.daemons();
        let _ = self.prism(&["stop"]);
        for &pid in &pids {
            // SAFETY: a pid this test's daemons recorded; killing an already gone one is harmless.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        remove_stores_of(&pids);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stops `hosts` side by side (each `prism stop` waits for its daemon to let its jobs go).
pub fn stop_all(hosts: Vec<Host>) {
    std::thread::scope(|s| {
        for host in hosts {
            s.spawn(move || drop(host));
        }
    });
}

/// Removes the object stores (in shared memory) and spill directories (on disk) of the
/// processes `pids`: a daemon a test SIGKILLed leaves its jobs' behind (the next session on the
/// machine would sweep them).
pub fn remove_stores_of(pids: &[i32]) {
    for dir in [PathBuf::from("/dev/shm"), std::env::temp_dir()] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if pids
                .iter()
                .any(|pid| name.starts_with(&format!("prism-{pid}-")))
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Whether process `pid` is alive (not a zombie).
pub fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, r)| !r.starts_with('Z'))
    })
}

/// The processes whose parent is `parent`.
pub fn children(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.split(' ').nth(1)?.parse::<i32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

/// Sends `signal` to each of `pids`; the first one refused is an error (one that has ended
/// meanwhile is not).
pub fn signal(pids: &[i32], signal: i32) -> Result<(), String> {
    let mut refused = None;
    for &pid in pids {
        // SAFETY: kill(2) on a daemon this test started or one of its children.
        if unsafe { libc::kill(pid, signal) } != 0 {
            let why = std::io::Error::last_os_error();
            if why.raw_os_error() == Some(libc::ESRCH) {
                continue;
            }
            refused.get_or_insert(format!("signal {signal} to process {pid}: {why}"));
        }
    }
    refused.map_or(Ok(()), Err)
}

/// Whether every thread of every process in `pids` is stopped (state `T` in
/// `/proc/PID/task/TID/stat`). `kill(SIGSTOP)` returns before that: the kernel wakes one thread,
/// which then stops the others, so on a busy machine a process can go on for a few milliseconds.
pub fn all_stopped(pids: &[i32]) -> bool {
    pids.iter().all(|pid| {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return true; // gone: it runs no more
        };
        tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat")).map_or(true, |stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
            })
        })
    })
}

/// Whether `check` holds within `seconds` (looked at every 50 ms).
pub fn eventually(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// A plain HTTP GET of `url` (HTTP/1.0, so the server closes after answering) with extra
/// header lines (`Name: value`); returns the status, the response's head and its body.
pub fn http(url: &str, headers: &[String]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).expect("the dashboard listens");
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n{extra}\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().expect("a status code");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_string(), body.to_string())
}

/// [`http`] with the token as a Bearer token, if given: the status and the body.
pub fn http_get(url: &str, token: Option<&str>) -> (u16, String) {
    let auth: Vec<String> = token
        .map(|t| format!("Authorization: Bearer {t}"))
        .into_iter()
        .collect();
    let (status, _, body) = http(url, &auth);
    (status, body)
}
