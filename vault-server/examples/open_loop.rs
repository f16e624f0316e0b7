//! Constant-rate (open-loop) load for `POST /v1/keys/verify`, as `wrk2` or `oha --qps` would
//! give (neither is in Debian): each of C connections sends its share of the rate on its own
//! schedule, and a request's latency is counted from when it was due, not from when it was
//! sent, so a stall is not hidden by the requests it delayed (coordinated omission).
//!
//! One thread per connection, plain HTTP/1.1 over a `TcpStream`, and `thread::sleep` to the due
//! time: an async timer's millisecond ticks would add up to a millisecond to every latency.
//!
//! `cargo run --release -p vault-server --example open_loop -- ADDR TOKEN KEYS_FILE RATE SECONDS [CONNECTIONS]`
//! (ADDR like `127.0.0.1:8200`; KEYS_FILE one key per line). Prints the achieved rate and
//! p50, p99 and p99.9 in microseconds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 5 {
        eprintln!("usage: open_loop ADDR TOKEN KEYS_FILE RATE SECONDS [CONNECTIONS]");
        std::process::exit(2);
    }
    let (addr, token) = (args[0].clone(), args[1].clone());
    let keys: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(&args[2])
            .expect("keys file")
            .lines()
            .map(str::to_owned)
            .collect(),
    );
    let rate: f64 = args[3].parse().expect("rate");
    let seconds: f64 = args[4].parse().expect("seconds");
    let connections: usize = args.get(5).map_or(64, |c| c.parse().expect("connections"));
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let per_connection = (seconds * rate / connections as f64) as usize;
    let start = Instant::now() + Duration::from_millis(200);
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let (addr, token, keys) = (addr.clone(), token.clone(), Arc::clone(&keys));
            std::thread::spawn(move || {
                let stream = TcpStream::connect(&addr).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                // Connections start evenly spread over one interval.
                let offset = interval.mul_f64(c as f64 / connections as f64);
                let mut latencies = Vec::with_capacity(per_connection);
                let mut line = String::new();
                for k in 0..per_connection {
                    let due = start + offset + interval * k as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let key = &keys[(k * connections + c) % keys.len()];
                    let body = format!(r#"{{"key":"{key}","cost":0}}"#);
                    write!(
                        writer,
                        "POST /v1/keys/verify HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .expect("send");
                    // Status line, headers (for the length), body.
                    line.clear();
                    reader.read_line(&mut line).expect("status");
                    assert!(line.starts_with("HTTP/1.1 200"), "a verify failed: {line}");
                    let mut length = 0usize;
                    loop {
                        line.clear();
                        reader.read_line(&mut line).expect("header");
                        let header = line.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().expect("content-length");
                        }
                    }
                    let mut answer = vec![0u8; length];
                    reader.read_exact(&mut answer).expect("body");
                    latencies.push(due.elapsed().as_micros() as u64);
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("connection"))
        .collect();
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "offered {rate:.0}/s over {connections} connections for {seconds} s: {:.0}/s answered, p50 {} µs, p99 {} µs, p99.9 {} µs",
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
}
