//! The dashboard in a real browser: a head on 127.0.0.1 and a node on 127.0.0.2, this test
//! binary as the driver of a job with tasks, a failed task, a named actor, a placement group
//! and a put; headless Chromium loads each page (logged in by `?token=`, then by its cookie)
//! and the test checks what the page shows, and takes a screenshot of the tasks page.
//!
//! Needs Chromium (`chromium`, `chromium-browser` or `google-chrome` on the PATH, or
//! `PRISM_CHROMIUM`): without it the test says so and passes (`.ci/run` installs Debian's
//! `chromium` when it runs as root). `PRISM_SCREENSHOT=FILE` keeps the screenshot there.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{Host, http_get};
use prism::{ObjectRef, actor, remote};

#[remote]
fn square_for_the_browser(x: u64) -> u64 {
    x * x
}

#[remote]
fn fails_for_the_browser() -> u64 {
    panic!("a failure the tasks page shows")
}

#[actor]
struct BrowserCounter {
    count: u64,
}

#[actor]
impl BrowserCounter {
    fn new(start: u64) -> Self {
        BrowserCounter { count: start }
    }

    fn add(&mut self, n: u64) -> u64 {
        self.count += n;
        self.count
    }
}

/// The browser to drive, if there is one.
fn chromium() -> Option<PathBuf> {
    if let Some(given) = std::env::var_os("PRISM_CHROMIUM") {
        return Some(PathBuf::from(given));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// How long one page load may take.
const LOAD_LIMIT: Duration = Duration::from_secs(60);

/// Runs headless Chromium on `url` with `extra` flags in its own process group (killed
/// whole if it overruns [`LOAD_LIMIT`]); what it printed.
fn browse(browser: &Path, profile: &Path, url: &str, extra: &[&str]) -> Result<String, String> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-breakpad",
            "--disable-crash-reporter",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", browser.display()))?;
    let pid = child.id() as i32;
    let out = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if started.elapsed() > LOAD_LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // The browser's helpers (zygote, renderer, GPU) are in its group: none outlives it.
    // SAFETY: signals the process group this function started (its leader's pid).
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.wait();
    let printed = reader.join().unwrap_or_default();
    match status {
        Some(status) if status.success() => Ok(printed),
        Some(status) => Err(format!("chromium on {url} ended with {status}")),
        None => Err(format!("chromium did not load {url} in {LOAD_LIMIT:?}")),
    }
}

fn main() {
    common::cluster::serve_if_worker();
    let Some(browser) = chromium() else {
        println!(
            "dashboard_browser: skipped: no Chromium found (chromium, chromium-browser or \
             google-chrome on the PATH, or PRISM_CHROMIUM); .ci/run installs Debian's chromium \
             when it runs as root"
        );
        return;
    };
    let (head, addr, token) = common::cluster::head("browser-head", "2");
    let node = Host::new("browser-node");
    node.join(
        &addr,
        &token,
        "127.0.0.2",
        &["--num-cpus", "2", "--name", "browser-node"],
    );
    let config = prism::Config::new().address(addr).token(token.clone());
    prism::init_with(config).expect("join the cluster");
    let result = run(&browser, &head);
    prism::shutdown();
    drop((node, head));
    if let Err(e) = result {
        eprintln!("dashboard_browser: {e}");
        std::process::exit(1);
    }
    println!("dashboard_browser: every page loaded and showed the job");
}

fn run(browser: &Path, head: &Host) -> Result<(), String> {
    let failed = |e: prism::Error| e.to_string();
    // The job: tasks, a failure, a named actor, a placement group, a put.
    let refs: Vec<ObjectRef<u64>> = (0..40).map(square_for_the_browser::remote).collect();
    let squares = prism::get_all_blocking(&refs).map_err(failed)?;
    assert_eq!(
        squares.iter().sum::<u64>(),
        (0..40u64).map(|x| x * x).sum::<u64>()
    );
    assert!(fails_for_the_browser::remote().get_blocking().is_err());
    let counter = BrowserCounter::options()
        .name("counter-in-the-browser")
        .remote(1);
    counter.add(41).get_blocking().map_err(failed)?;
    let group = prism::placement_group(
        vec![prism::Bundle::new().cpus(1.0); 2],
        prism::PlacementStrategy::Pack,
    )
    .map_err(failed)?;
    if !group
        .wait_blocking(Duration::from_secs(30))
        .map_err(failed)?
    {
        return Err("the placement group was not placed in 30 s".into());
    }
    let _held = prism::put_ref(&vec![1u8; 4096]).map_err(failed)?;

    let dashboard = head.file("dashboard").trim().to_string();
    let token = head.file("token").trim().to_string();
    // Wait until the head has the job's report (the driver sends one each second).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let api = format!("{dashboard}/api/tasks?state=FAILED");
        let (_, body) = http_get(&api, Some(&token));
        let (_, jobs) = http_get(&format!("{dashboard}/api/jobs"), Some(&token));
        if body.contains("fails_for_the_browser") && jobs.contains("counter-in-the-browser") {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the head never had the job's report: {body}\n{jobs}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let profile = std::env::temp_dir().join(format!("prism-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    // The first page logs the browser in (`?token=` sets the cookie and leaves the address);
    // the others go by the cookie alone.
    let first = format!("{dashboard}/?token={token}");
    let dom = browse(browser, &profile, &first, &["--dump-dom"])?;
    check(
        "/",
        &dom,
        &["Cluster", "2 of 2 nodes alive", "1 of 1 jobs running"],
    )?;
    let pages: [(&str, &[&str]); 6] = [
        ("/jobs", &["RUNNING", "dashboard_browser"]),
        (
            "/tasks",
            &[
                "square_for_the_browser",
                "FINISHED 40",
                "FAILED",
                "a failure the tasks page shows",
            ],
        ),
        (
            "/actors",
            &["BrowserCounter", "counter-in-the-browser", "ALIVE"],
        ),
        ("/objects", &["put", "IN_MEMORY"]),
        ("/nodes", &["browser-node", "127.0.0.2", "ALIVE"]),
        ("/groups", &["PACK", "CREATED"]),
    ];
    for (path, want) in pages {
        let dom = browse(
            browser,
            &profile,
            &format!("{dashboard}{path}"),
            &["--dump-dom"],
        )?;
        check(path, &dom, want)?;
    }
    // A page of one task, reached as its link on the tasks page would.
    let (_, body) = http_get(
        &format!("{dashboard}/api/tasks?state=FAILED&limit=1"),
        Some(&token),
    );
    let failed_task: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let job = failed_task["tasks"][0]["job"].as_str().unwrap_or_default();
    let id = failed_task["tasks"][0]["task_id"]
        .as_str()
        .unwrap_or_default();
    let url = format!("{dashboard}/task?job={job}&id={id}");
    let dom = browse(browser, &profile, &url, &["--dump-dom"])?;
    check("/task", &dom, &["fails_for_the_browser", "FAILED", "Runs"])?;
    // A browser without the cookie learns nothing.
    let stranger = profile.with_extension("stranger");
    let dom = browse(
        browser,
        &stranger,
        &format!("{dashboard}/tasks"),
        &["--dump-dom"],
    )?;
    if dom.contains("square_for_the_browser") {
        return Err(format!("a browser without the token saw the tasks:\n{dom}"));
    }
    // The tasks page as a picture.
    let shot = std::env::var_os("PRISM_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile.with_extension("png"));
    let flag = format!("--screenshot={}", shot.display());
    let url = format!("{dashboard}/tasks");
    browse(browser, &profile, &url, &[&flag, "--window-size=1280,900"])?;
    let png = std::fs::read(&shot).map_err(|e| format!("no screenshot at {shot:?}: {e}"))?;
    if !png.starts_with(b"\x89PNG") || png.len() < 10_000 {
        return Err(format!(
            "the screenshot is not a picture ({} bytes)",
            png.len()
        ));
    }
    if std::env::var_os("PRISM_SCREENSHOT").is_none() {
        let _ = std::fs::remove_file(&shot);
    }
    for dir in [&profile, &stranger] {
        let _ = std::fs::remove_dir_all(dir);
    }
    prism::remove_placement_group(&group).map_err(failed)?;
    Ok(())
}

/// Whether the page at `path` shows every text in `want`.
fn check(path: &str, dom: &str, want: &[&str]) -> Result<(), String> {
    match want.iter().find(|w| !dom.contains(*w)) {
        None => Ok(()),
        Some(missing) => Err(format!("the page {path} does not show {missing:?}:\n{dom}")),
    }
}
