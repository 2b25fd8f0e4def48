//! The machine's own ceilings, measured beside the broker in the same run:
//! how fast this machine moves bytes between a loopback socket and a file
//! with nothing of Kafka in between.
//!
//! - produce: a client writes to a socket; a server reads into one reused
//!   buffer and appends to a file, fsyncing once a second and at the end
//!   (as a broker with `flush.ms=1000`, Keel's default, does);
//! - fetch: a server sends a file already in the page cache to the socket
//!   with `sendfile`; a client reads into one reused buffer.
//!
//! Both sides run in this process, one thread each, as the broker and the
//! load generator share the machine in the broker's runs. The CPU time of
//! the side in the broker's place (the receiver of produce, the sender of
//! fetch) is reported per GB: the floor of what a broker spends in the
//! kernel to move the bytes, its own work aside.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

const CHUNK: usize = 1024 * 1024;
/// The files are left for the caller to delete: on a file system mounted
/// with `discard` (this machine's), deleting gigabytes slows the writes
/// that follow for a while, and the broker's runs delete nothing.
const FSYNC_INTERVAL: Duration = Duration::from_secs(1);

fn connected() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("address")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    (client, server)
}

/// Socket to file with fsync: `bytes` bytes; prints and returns MB/s.
pub fn produce(bytes: u64, dir: &Path) -> f64 {
    std::fs::create_dir_all(dir).expect("ceiling directory");
    let path = unused_path(dir, "ceiling-produce");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .expect("ceiling file");
    let (mut client, mut server) = connected();
    let started = Instant::now();
    let sender = std::thread::spawn(move || write_bytes(&mut client, bytes));
    let cpu_before = thread_cpu_seconds();
    let mut buf = vec![0u8; CHUNK];
    let mut received = 0u64;
    let mut last_sync = Instant::now();
    while received < bytes {
        let n = server.read(&mut buf).expect("receive");
        assert!(n > 0, "the sender stopped early");
        file.write_all(&buf[..n]).expect("write");
        received += n as u64;
        if last_sync.elapsed() >= FSYNC_INTERVAL {
            file.sync_data().expect("fsync");
            last_sync = Instant::now();
        }
    }
    file.sync_data().expect("fsync");
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_seconds() - cpu_before;
    sender.join().expect("sender");
    report(
        "produce ceiling (socket to file, fsync every second)",
        bytes,
        elapsed,
        cpu,
    )
}

/// File to socket with sendfile: `bytes` bytes; prints and returns MB/s.
pub fn fetch(bytes: u64, dir: &Path) -> f64 {
    std::fs::create_dir_all(dir).expect("ceiling directory");
    let path = unused_path(dir, "ceiling-fetch");
    write_bytes(&mut File::create(&path).expect("ceiling file"), bytes);
    let file = File::open(&path).expect("ceiling file");
    let (mut client, server) = connected();
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        let cpu_before = thread_cpu_seconds();
        let mut offset = 0u64;
        while offset < bytes {
            let n = (bytes - offset).min(CHUNK as u64) as usize;
            let sent =
                rustix::fs::sendfile(&server, &file, Some(&mut offset), n).expect("sendfile");
            assert!(sent > 0, "the file ended early");
        }
        thread_cpu_seconds() - cpu_before
    });
    let mut buf = vec![0u8; CHUNK];
    let mut received = 0u64;
    while received < bytes {
        let n = client.read(&mut buf).expect("receive");
        assert!(n > 0, "the sender stopped early");
        received += n as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = sender.join().expect("sender");
    report(
        "fetch ceiling (file to socket, sendfile)",
        bytes,
        elapsed,
        cpu,
    )
}

/// `dir/name-N` for the first N not taken.
fn unused_path(dir: &Path, name: &str) -> std::path::PathBuf {
    (1..)
        .map(|n| dir.join(format!("{name}-{n}")))
        .find(|path| !path.exists())
        .expect("a free name")
}

/// Writes `bytes` bytes to `out`, a chunk at a time.
fn write_bytes(out: &mut impl Write, bytes: u64) {
    let chunk = vec![b'k'; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(CHUNK as u64) as usize;
        out.write_all(&chunk[..n]).expect("write");
        left -= n as u64;
    }
}

fn thread_cpu_seconds() -> f64 {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    time.tv_sec as f64 + time.tv_nsec as f64 / 1e9
}

fn report(what: &str, bytes: u64, elapsed: f64, cpu: f64) -> f64 {
    let mb_per_s = bytes as f64 / 1e6 / elapsed;
    println!(
        "{what}: {:.1} MB in {elapsed:.2} s: {mb_per_s:.1} MB/s, broker side cpu {cpu:.2} s, {:.3} cpu-s/GB",
        bytes as f64 / 1e6,
        cpu / (bytes as f64 / 1e9),
    );
    mb_per_s
}
