//! The local trust boundary of an embedded cluster, tried as another local user would: no
//! socket of the driver accepts strangers (workers inherit their links), and the store's
//! directories and objects, in shared memory and spilled to disk, are readable by this user
//! alone. Where a second user is needed (uid 65534), the case runs only as root and says so
//! when skipped.

mod common;

use std::path::{Path, PathBuf};

use common::{Case, ensure};
use libtest_mimic::Failed;
use prism::{actor, remote};

/// An actor that reads large arguments and tells its pid.
#[actor]
struct Reader {
    read: u64,
}

#[actor]
impl Reader {
    fn new() -> Self {
        Reader { read: 0 }
    }

    fn sum(&mut self, bytes: Vec<u8>) -> u64 {
        self.read += 1;
        bytes.iter().map(|&b| b as u64).sum()
    }

    fn pid(&self) -> u32 {
        std::process::id()
    }
}

#[remote]
fn square(x: u64) -> u64 {
    x * x
}

#[remote]
fn big(n: u64) -> Vec<u8> {
    vec![7u8; n as usize]
}

/// Socket inodes this process has open.
fn own_socket_inodes() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|target| {
                    let text = target.to_string_lossy().into_owned();
                    text.strip_prefix("socket:[")
                        .and_then(|rest| rest.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The Unix sockets this process listens on, with their names (`@...` for abstract ones).
fn own_listening_unix_sockets() -> Vec<String> {
    let ours = own_socket_inodes();
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode [Path]; Flags 00010000 = listening.
            let (flags, inode) = (fields.get(3)?, fields.get(6)?);
            let listening = u32::from_str_radix(flags, 16).ok()? & 0x0001_0000 != 0;
            (listening && ours.iter().any(|i| i == inode))
                .then(|| fields.get(7).unwrap_or(&"(unnamed)").to_string())
        })
        .collect()
}

fn no_socket_accepts_strangers() -> Result<(), Failed> {
    // Workers are up (they answered), and this process listens on one Unix socket only: the
    // one where it answers `prism list tasks`, 0600 in a 0700 directory of this user, which no
    // other user reaches (and whose peers it checks): nothing another user could connect to as
    // a worker.
    let squares = prism::get_all_blocking(&(0..200).map(square::remote).collect::<Vec<_>>())?;
    ensure(
        squares == (0..200).map(|x| x * x).collect::<Vec<_>>(),
        "wrong squares",
    )?;
    let listening = own_listening_unix_sockets();
    let state = format!("drivers/{}.sock", std::process::id());
    ensure(
        listening.len() == 1 && listening[0].ends_with(&state),
        format!("the driver listens on Unix sockets {listening:?}"),
    )?;
    let socket = PathBuf::from(&listening[0]);
    let dir = socket.parent().ok_or("a socket in a directory")?;
    ensure(
        common::mode_of(&socket) == 0o600 && common::mode_of(dir) == 0o700,
        format!(
            "{} is {:o} in a directory of mode {:o}",
            socket.display(),
            common::mode_of(&socket),
            common::mode_of(dir)
        ),
    )?;
    let me = std::process::id().to_string();
    let ask = |other: bool| {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_prism"));
        command.args(["list", "tasks", "--pid", &me]);
        if other {
            command.uid(65534).gid(65534);
        }
        command.output()
    };
    ensure(ask(false)?.status.success(), "this user asks the driver")?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: skipping the request as another user (uid 65534)");
        return Ok(());
    }
    match ask(true) {
        Ok(out) => ensure(
            !out.status.success(),
            format!(
                "another user asked the driver: {}",
                String::from_utf8_lossy(&out.stdout)
            ),
        ),
        // The build lies in a directory that user cannot enter (a fresh clone under a 0700
        // temporary directory): nothing to run as them.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!(
                "uid 65534 cannot run this build's prism ({e}): skipping the request as another user"
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The embedded node's store directory (this process's `/dev/shm/prism-PID-*`).
fn store_dir() -> Result<PathBuf, Failed> {
    let prefix = format!("prism-{}-", std::process::id());
    std::fs::read_dir("/dev/shm")?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .ok_or_else(|| format!("no /dev/shm/{prefix}* store").into())
}

/// The spill directory of this process's store.
fn spill_dir(store: &Path) -> PathBuf {
    let name = store.file_name().expect("a named store");
    std::env::temp_dir().join(name).with_extension("spill")
}

/// Checks `dir` is 0700 and every file below it 0600; returns the files.
fn private_tree(dir: &Path) -> Result<Vec<PathBuf>, Failed> {
    ensure(
        common::mode_of(dir) == 0o700,
        format!("{} has mode {:o}", dir.display(), common::mode_of(dir)),
    )?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(private_tree(&path)?);
        } else {
            ensure(
                common::mode_of(&path) == 0o600,
                format!("{} has mode {:o}", path.display(), common::mode_of(&path)),
            )?;
            files.push(path);
        }
    }
    Ok(files)
}

fn objects_are_readable_by_this_user_alone() -> Result<(), Failed> {
    const MB: usize = 1 << 20;
    // A put, a worker's return value, and enough more to spill (the store holds 8 MiB).
    let put = prism::put(vec![1u8; 2 * MB])?;
    let made = big::remote(2 * MB as u64);
    prism::get_blocking(&made)?;
    let more: Vec<_> = (0..4).map(|_| prism::put(vec![3u8; 3 * MB])).collect();
    let more = more.into_iter().collect::<prism::Result<Vec<_>>>()?;
    let store = store_dir()?;
    let shared = private_tree(&store)?;
    ensure(!shared.is_empty(), "no segment in the store")?;
    let spill = spill_dir(&store);
    let spilled = private_tree(&spill)?;
    ensure(
        !spilled.is_empty(),
        format!("nothing spilled to {}", spill.display()),
    )?;
    match common::readable_by_other_user(&shared[0]) {
        Some(readable) => {
            ensure(!readable, "another user read a shared-memory object")?;
            ensure(
                common::readable_by_other_user(&spilled[0]) == Some(false),
                "another user read a spilled object",
            )?;
        }
        None => eprintln!("not root: skipping the read attempt as another user (uid 65534)"),
    }
    // Everything still reads back right.
    ensure(prism::get_blocking(&put)? == vec![1u8; 2 * MB], "put")?;
    for r in &more {
        ensure(prism::get_blocking(r)? == vec![3u8; 3 * MB], "spilled put")?;
    }
    Ok(())
}

/// Mappings of files under `dir` in process `pid`.
fn mappings_under(pid: u32, dir: &Path) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let dir = dir.to_string_lossy().into_owned();
    maps.lines()
        .filter(|line| line.contains(&dir))
        .map(str::to_string)
        .collect()
}

fn workers_drop_mappings_of_freed_segments() -> Result<(), Failed> {
    const MB: usize = 1 << 20;
    let reader = Reader::remote();
    let pid = prism::get_blocking(&reader.pid())?;
    let arg = prism::put(vec![2u8; 3 * MB / 2])?;
    ensure(
        prism::get_blocking(&reader.sum(&arg))? == 3 * MB as u64,
        "sum",
    )?;
    let store = store_dir()?;
    ensure(
        !mappings_under(pid, &store).is_empty(),
        "the worker did not map its argument (nothing to test)",
    )?;
    // Freed: its segment is removed, or pooled for the next put of its size to refill.
    drop(arg);
    let freed = common::eventually(10, || {
        mappings_under(pid, &store)
            .iter()
            .all(|m| m.contains("(deleted)") || m.contains("/pool/"))
    });
    ensure(freed, "the argument's segment was not freed")?;
    let refill = prism::put(vec![9u8; 3 * MB / 2])?;
    prism::get_blocking(&reader.pid())?;
    let left = mappings_under(pid, &store);
    ensure(
        left.is_empty(),
        format!("the worker still maps freed segments: {left:?}"),
    )?;
    ensure(
        prism::get_blocking(&reader.sum(&refill))? == 27 * MB as u64 / 2,
        "the refilled segment reads as the new object",
    )
}

fn main() {
    let cases: &[Case] = &[
        ("no_socket_accepts_strangers", no_socket_accepts_strangers),
        (
            "objects_are_readable_by_this_user_alone",
            objects_are_readable_by_this_user_alone,
        ),
        (
            "workers_drop_mappings_of_freed_segments",
            workers_drop_mappings_of_freed_segments,
        ),
    ];
    common::run(
        prism::Config::new()
            .num_cpus(2.0)
            .object_store_memory(8 << 20),
        cases,
    );
}
