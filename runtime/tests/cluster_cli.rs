//! The `prism` command with real daemons on loopback: a head on 127.0.0.1 and two nodes on
//! 127.0.0.2 and 127.0.0.3, each "host" with its own session directory. Every daemon the test
//! starts is stopped (and killed if need be) when the test ends, pass or fail.

mod common;

use common::cluster::{Host, eventually, head_args, http_get, running, signal};
use std::time::{Duration, Instant};

fn status_until(head: &Host, want: impl Fn(&str) -> bool) -> String {
    status_within(head, Duration::from_secs(20), want)
}

/// `prism status` once it shows what `want` wants, or as it is after `limit`.
fn status_within(head: &Host, limit: Duration, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let status = head.ok(&["status"]);
        if want(&status) || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_head_and_two_nodes_on_loopback() {
    let head = Host::new("head");
    let printed = head.start_head(&["--port", "0", "--num-cpus", "2", "--resources", "special=1"]);
    let addr = head.file("address");
    let token = head.file("token");
    assert!(
        printed.contains(&addr) && printed.contains(&token),
        "{printed}"
    );

    let a = Host::new("a");
    let b = Host::new("b");
    a.join(
        &addr,
        &token,
        "127.0.0.2",
        &["--num-cpus", "1", "--name", "node-a"],
    );
    b.join(
        &addr,
        &token,
        "127.0.0.3",
        &[
            "--num-cpus",
            "3",
            "--name",
            "node-b",
            "--resources",
            "accel=2",
        ],
    );

    let status = head.ok(&["status"]);
    assert!(status.contains("3 of 3 nodes alive"), "{status}");
    assert!(
        head.dir.join("cli.pem").exists(),
        "status keeps its certificate for the next call"
    );
    for line in [
        "special 0/1",
        "node-a",
        "127.0.0.2:",
        "CPU 0/3",
        "accel 0/2",
        "127.0.0.3:",
    ] {
        assert!(status.contains(line), "{line} in {status}");
    }

    // The dashboard answers only with the token.
    let dashboard = head.file("dashboard");
    let (code, body) = http_get(&format!("{dashboard}/api/nodes"), None);
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("node-a"));
    let (code, _) = http_get(&format!("{dashboard}/api/nodes"), Some("prism1-wrong"));
    assert_eq!(code, 401);
    let (code, body) = http_get(&format!("{dashboard}/api/nodes"), Some(&token));
    assert_eq!(code, 200, "{body}");
    let nodes: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(nodes.as_array().map(Vec::len), Some(3), "{body}");
    assert_eq!(nodes[2]["total"]["accel"], 2.0, "{body}");
    let (code, metrics) = http_get(&format!("{dashboard}/metrics"), Some(&token));
    assert_eq!(code, 200);
    assert!(
        metrics.contains("prism_nodes{state=\"alive\"} 3"),
        "{metrics}"
    );
    // The read-only metrics token scrapes /metrics and nothing else.
    let metrics_token = head.file("metrics-token");
    assert_ne!(metrics_token.trim(), token.trim());
    let (code, _) = http_get(&format!("{dashboard}/metrics"), Some(metrics_token.trim()));
    assert_eq!(code, 200, "the metrics token scrapes");
    let (code, body) = http_get(&format!("{dashboard}/api/jobs"), Some(&token));
    assert_eq!(code, 200, "{body}");
    let jobs: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(jobs.is_array(), "{body}");
    for path in ["/api/nodes", "/api/jobs", "/"] {
        let (code, _) = http_get(&format!("{dashboard}{path}"), Some(metrics_token.trim()));
        assert_eq!(code, 401, "the metrics token opened {path}");
    }
    let (code, page) = http_get(&dashboard, Some(&token));
    assert_eq!(code, 200);
    assert!(page.contains("3 of 3 nodes alive"), "{page}");
    let (code, page) = http_get(&format!("{dashboard}/nodes"), Some(&token));
    assert_eq!(code, 200);
    assert!(page.contains("node-b"), "{page}");

    // A node is cut off (killed without warning): the head counts it dead.
    let victim = b.daemons();
    assert_eq!(victim.len(), 1);
    // SAFETY: the pid of the daemon this test started for host b.
    unsafe { libc::kill(victim[0], libc::SIGKILL) };
    let status = status_until(&head, |s| s.contains("2 of 3 nodes alive"));
    assert!(status.contains("2 of 3 nodes alive"), "{status}");
    let b_line = status
        .lines()
        .find(|l| l.contains("node-b"))
        .expect("node-b listed");
    assert!(b_line.contains("DEAD"), "{b_line}");

    // A host with a wrong token is refused, with the reason.
    let intruder = Host::new("intruder");
    let forged = format!(
        "prism1-{}-{}",
        "0".repeat(64),
        token.rsplit('-').next().unwrap()
    );
    let out = intruder.prism(&[
        "start",
        "--address",
        &addr,
        "--token",
        &forged,
        "--host",
        "127.0.0.4",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong join token"), "{err}");
    assert!(intruder.daemons().is_empty());

    // The running members are unaffected; then stop ends every daemon.
    let status = head.ok(&["status"]);
    assert!(status.contains("2 of 3 nodes alive"), "{status}");
    let pids: Vec<i32> = head.daemons().into_iter().chain(a.daemons()).collect();
    assert_eq!(pids.len(), 2);
    assert!(a.ok(&["stop"]).contains("Stopped 1"));
    // A stopped node left the table (a killed one stays, counted dead): at once, or within
    // a second or two on a loaded machine (the head answers its leave; never a timeout, which
    // would leave it listed as DEAD).
    let left = |s: &str| s.contains("1 of 2 nodes alive") && !s.contains("node-a");
    let status = status_within(&head, Duration::from_secs(3), left);
    assert!(left(&status), "{status}\n{}\n{}", a.logs(), head.logs());
    assert!(head.ok(&["stop"]).contains("Stopped 1"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| running(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pids.iter().all(|p| !running(*p)), "every daemon stopped");
}

#[test]
fn a_restarted_head_recovers_its_cluster_and_nodes_come_back() {
    let head = Host::new("phoenix");
    head.start_head(&["--port", "0"]);
    let addr = head.file("address");
    let token = head.file("token");
    let node = Host::new("faithful");
    let printed = node.join(&addr, &token, "127.0.0.2", &["--name", "n1"]);
    assert!(printed.contains("node 2 (n1)"), "{printed}");

    // The head dies without warning and starts again on the same address.
    let old = head.daemons();
    // SAFETY: the pid of the head daemon this test started.
    unsafe { libc::kill(old[0], libc::SIGKILL) };
    let _ = std::fs::remove_file(head.dir.join("daemons").join(old[0].to_string()));
    let port = addr.rsplit(':').next().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let printed = loop {
        // The old process may hold the port for a moment after the kill.
        let out = head.prism(&head_args(&["--port", port]));
        if out.status.success() || Instant::now() > deadline {
            break String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        printed.contains(&token),
        "same cluster, same token: {printed}"
    );
    assert_eq!(head.file("token"), token);

    // The node reconnects with its certificate and keeps its number.
    let status = status_until(&head, |s| s.contains("2 of 2 nodes alive"));
    assert!(status.contains("2 of 2 nodes alive"), "{status}");
    let line = status
        .lines()
        .find(|l| l.contains("n1"))
        .expect("n1 listed");
    assert!(line.starts_with('2'), "{line}");
}

#[test]
fn a_node_stopped_while_it_reconnects_still_leaves_the_table() {
    let head = Host::new("sleepy");
    head.start_head(&["--port", "0"]);
    let (addr, token) = (head.file("address"), head.file("token"));
    let node = Host::new("restless");
    node.join(&addr, &token, "127.0.0.2", &["--name", "n1"]);
    let head_pid = head.daemons();

    // The head freezes: the node's heartbeats go unanswered, it drops its connection and
    // tries to connect again. It is stopped then, and the head wakes while it stops.
    signal(&head_pid, libc::SIGSTOP).expect("SIGSTOP the head");
    let dropped = eventually(20, || node.logs().contains("lost the head"));
    let stop = node.spawn(&["stop"]);
    std::thread::sleep(Duration::from_millis(300));
    signal(&head_pid, libc::SIGCONT).expect("SIGCONT the head");
    assert!(
        dropped,
        "the node never gave up on the frozen head: {}",
        node.logs()
    );
    let stopped = stop.wait_with_output().expect("prism stop");
    assert!(String::from_utf8_lossy(&stopped.stdout).contains("Stopped 1"));
    let gone = |s: &str| s.contains("1 of 1 nodes alive") && !s.contains("n1");
    let status = status_within(&head, Duration::from_secs(5), gone);
    assert!(gone(&status), "{status}\n{}", node.logs());
}

#[test]
fn start_explains_what_it_needs() {
    let host = Host::new("lonely");
    let out = host.prism(&["start"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--head"));
    let out = host.prism(&[
        "start",
        "--head",
        "--dashboard-port",
        "0",
        "--resources",
        "x=abc",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a number"));
    let out = host.prism(&["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no head address"));
}

#[test]
fn the_session_is_private_and_the_token_stays_out_of_argv() {
    let head = Host::new("private-head");
    head.start_head(&["--port", "0", "--num-cpus", "1"]);
    let token = head.file("token");
    assert_eq!(common::mode_of(&head.dir), 0o700, "the session directory");
    let mut checked = 0;
    for entry in std::fs::read_dir(&head.dir).unwrap().flatten() {
        let path = entry.path();
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(common::mode_of(&path), want, "{}", path.display());
        checked += 1;
    }
    for entry in std::fs::read_dir(head.dir.join("daemons"))
        .unwrap()
        .flatten()
    {
        assert_eq!(
            common::mode_of(&entry.path()),
            0o600,
            "{}",
            entry.path().display()
        );
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} files checked");
    match common::readable_by_other_user(&head.dir.join("token")) {
        Some(readable) => assert!(!readable, "another user read the join token"),
        None => eprintln!("not root: skipping the read attempt as another user (uid 65534)"),
    }

    // A node joined with --token (or --token-file) runs with the token in its environment,
    // never on its command line.
    let node = Host::new("private-node");
    node.join(
        &head.file("address"),
        &token,
        "127.0.0.2",
        &["--num-cpus", "1"],
    );
    let pids = node.daemons();
    assert_eq!(pids.len(), 1, "{pids:?}");
    let argv = std::fs::read(format!("/proc/{}/cmdline", pids[0])).unwrap();
    assert!(
        !String::from_utf8_lossy(&argv).contains(token.trim()),
        "the token shows in the daemon's argv"
    );
    let file_node = Host::new("private-node-file");
    let token_file = std::env::temp_dir().join(format!("prism-token-{}", std::process::id()));
    std::fs::write(&token_file, &token).unwrap();
    let out = file_node.ok(&[
        "start",
        "--address",
        &head.file("address"),
        "--token-file",
        token_file.to_str().unwrap(),
        "--host",
        "127.0.0.3",
        "--num-cpus",
        "1",
    ]);
    assert!(out.contains("joined"), "{out}");
    let _ = std::fs::remove_file(&token_file);
    let status = head.ok(&["status"]);
    assert!(status.contains("3 of 3 nodes alive"), "{status}");
}

#[test]
fn a_session_directory_someone_else_could_reach_is_refused() {
    // A symlink where the session directory should be (planted to redirect our secrets).
    let target = Host::new("planted-target");
    std::fs::create_dir_all(&target.dir).unwrap();
    let planted = Host::new("planted");
    std::os::unix::fs::symlink(&target.dir, &planted.dir).unwrap();
    let out = planted.prism(&head_args(&["--port", "0"]));
    assert!(!out.status.success(), "a symlinked session was used");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not a directory"), "{said}");
    assert!(std::fs::read_dir(&target.dir).unwrap().next().is_none());

    // A directory other users can enter.
    let open = Host::new("open");
    std::fs::create_dir_all(&open.dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = open.prism(&head_args(&["--port", "0"]));
    assert!(!out.status.success(), "an open session directory was used");
    assert!(String::from_utf8_lossy(&out.stderr).contains("lets other users in"));

    // A directory of another user (as root: owned by uid 65534).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let foreign = Host::new("foreign");
        std::fs::create_dir_all(&foreign.dir).unwrap();
        std::fs::set_permissions(&foreign.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&foreign.dir, Some(65534), Some(65534)).unwrap();
        let out = foreign.prism(&head_args(&["--port", "0"]));
        assert!(!out.status.success(), "another user's directory was used");
        assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to uid 65534"));
    } else {
        eprintln!("not root: skipping the directory owned by another user");
    }
}

#[test]
fn a_dashboard_off_loopback_needs_to_be_asked_for() {
    let head = Host::new("open-dashboard");
    let out = head.prism(&head_args(&["--port", "0", "--dashboard-host", "0.0.0.0"]));
    assert!(!out.status.success(), "served the token over plain HTTP");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("--insecure-dashboard"), "{said}");
    let printed = head.start_head(&[
        "--port",
        "0",
        "--dashboard-host",
        "0.0.0.0",
        "--insecure-dashboard",
    ]);
    assert!(printed.contains("Dashboard: http://0.0.0.0:"), "{printed}");
}

#[test]
fn stop_signals_only_the_daemons_it_started() {
    let head = Host::new("stop-head");
    head.start_head(&["--port", "0", "--num-cpus", "1"]);
    let daemons = head.daemons();
    assert_eq!(daemons.len(), 1);
    // Records planted for a process that is not a daemon of this session: one with a start
    // time that is not the process's, one with none.
    let mut bystanders = Vec::new();
    for planted_time in [Some("1"), None] {
        let sleeper = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = sleeper.id();
        let records = head.dir.join("daemons");
        std::fs::write(records.join(pid.to_string()), "planted").unwrap();
        if let Some(time) = planted_time {
            std::fs::write(records.join(format!("{pid}.id")), time).unwrap();
        }
        bystanders.push(sleeper);
    }
    let out = head.prism(&["stop"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Stopped 1 Prism daemon"), "{said}");
    for sleeper in &mut bystanders {
        assert!(
            running(sleeper.id() as i32),
            "prism stop signalled a process that is not its daemon"
        );
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
    assert!(!running(daemons[0]), "the head still runs");
    assert!(
        !head
            .dir
            .join("daemons")
            .join(daemons[0].to_string())
            .exists(),
        "the stopped head's record is gone"
    );
}
