//! Constant-rate (open-loop) load for `POST /v1/keys/verify` (or `GET /v1/sys/health`), as
//! `wrk2` or `oha --qps` would give (neither is in Debian).
//!
//! A request's latency is counted from when it was due, not from when it was sent, so a stall
//! is not hidden by the requests it delayed (coordinated omission). The schedule is kept by one
//! pacing thread with `thread::sleep` (tens of microseconds late at most; an async timer ticks
//! in whole milliseconds and would add up to one to every latency), which hands each due time
//! round-robin to N keep-alive HTTP/1.1 connections (hyper, on a multithreaded tokio runtime).
//! A connection still busy with an earlier request holds the next one in its queue, and that
//! wait is counted, as a client on that connection would see it.
//!
//! So that a report can say the generator was not the bottleneck, it prints how late the pacer
//! itself handed requests out (`pacer lag`), and the CPU it used; and `RATE` may be `max`:
//! each connection sends its next request as soon as the last is answered (closed loop), which
//! against `GET /v1/sys/health` (`--route health`) shows the most this generator can drive.
//!
//! ```text
//! cargo run --release -p vault-server --example open_loop -- \
//!     [--route verify|health] [--threads T] ADDR TOKEN KEYS_FILE RATE SECONDS [CONNECTIONS]
//! ```
//!
//! ADDR like `127.0.0.1:8200`; KEYS_FILE one key per line (read for `verify` only); RATE in
//! requests per second or `max`; CONNECTIONS 64 by default; T tokio worker threads, 2 by
//! default. Prints one line: the offered and answered rates, p50, p99, p99.9 and max latency in
//! microseconds, the pacer's lag and the generator's CPU time. Any answer but 200 is counted
//! and reported as an error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// What each connection sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Verify,
    Health,
}

/// The command line.
struct Args {
    route: Route,
    threads: usize,
    addr: String,
    token: String,
    keys_file: String,
    /// Requests per second; `None` for `max`.
    rate: Option<f64>,
    seconds: f64,
    connections: usize,
}

const USAGE: &str = "usage: open_loop [--route verify|health] [--threads T] ADDR TOKEN KEYS_FILE RATE|max SECONDS [CONNECTIONS]";

fn parse_args() -> Result<Args, String> {
    let mut route = Route::Verify;
    let mut threads = 2;
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--route" => {
                route = match args.next().as_deref() {
                    Some("verify") => Route::Verify,
                    Some("health") => Route::Health,
                    _ => return Err("--route takes verify or health".into()),
                }
            }
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|t| t.parse().ok())
                    .filter(|t| *t > 0)
                    .ok_or("--threads takes a positive number")?;
            }
            _ => positional.push(arg),
        }
    }
    if !(5..=6).contains(&positional.len()) {
        return Err(USAGE.into());
    }
    let number = |text: &str, what: &str| -> Result<f64, String> {
        text.parse::<f64>()
            .ok()
            .filter(|n| *n > 0.0)
            .ok_or_else(|| format!("{what}: a positive number, not {text:?}"))
    };
    let rate = match positional[3].as_str() {
        "max" => None,
        text => Some(number(text, "RATE")?),
    };
    let connections = match positional.get(5) {
        Some(text) => number(text, "CONNECTIONS")? as usize,
        None => 64,
    };
    Ok(Args {
        route,
        threads,
        addr: positional[0].clone(),
        token: positional[1].clone(),
        keys_file: positional[2].clone(),
        rate,
        seconds: number(&positional[4], "SECONDS")?,
        connections: connections.max(1),
    })
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    /// Latencies in microseconds, from when each request was due.
    latencies: Vec<u64>,
    errors: u64,
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let keys: Arc<Vec<String>> = Arc::new(match args.route {
        Route::Verify => match std::fs::read_to_string(&args.keys_file) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) => {
                eprintln!("{}: {e}", args.keys_file);
                std::process::exit(2);
            }
        },
        Route::Health => Vec::new(),
    });
    if args.route == Route::Verify && keys.is_empty() {
        eprintln!("{}: no keys in it", args.keys_file);
        std::process::exit(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let cpu_before = cpu_seconds();
    match runtime.block_on(run(&args, keys)) {
        Ok(line) => {
            let cpu = cpu_seconds()
                .zip(cpu_before)
                .map(|(after, before)| after - before);
            match cpu {
                Some(cpu) => println!("{line}, generator CPU {:.2} cores", cpu / args.seconds),
                None => println!("{line}"),
            }
        }
        Err(e) => {
            eprintln!("open_loop: {e}");
            std::process::exit(1);
        }
    }
}

/// Connects, runs the load, and describes the outcome on one line.
async fn run(args: &Args, keys: Arc<Vec<String>>) -> Result<String, String> {
    let mut senders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let stream = TcpStream::connect(&args.addr)
            .await
            .map_err(|e| format!("connecting to {}: {e}", args.addr))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            // Ends when the sender is dropped; an error shows as failed requests.
            let _ = conn.await;
        });
        senders.push(sender);
    }
    let authorization = Bytes::from(format!("Bearer {}", args.token));
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs_f64(args.seconds);
    let mut tasks = Vec::with_capacity(args.connections);
    let mut queues = Vec::with_capacity(args.connections);
    for (c, sender) in senders.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel::<Instant>();
        let request = RequestMaker {
            route: args.route,
            host: args.addr.clone(),
            authorization: authorization.clone(),
            keys: Arc::clone(&keys),
            next: c,
            step: args.connections,
        };
        tasks.push(tokio::spawn(match args.rate {
            Some(_) => connection_open(sender, request, rx).boxed(),
            None => connection_closed(sender, request, start, end).boxed(),
        }));
        queues.push(tx);
    }
    let pacer = match args.rate {
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            Some(std::thread::spawn(move || {
                pace(queues, start, end, interval)
            }))
        }
        None => {
            drop(queues);
            None
        }
    };
    let mut tally = Tally::default();
    for task in tasks {
        let one = task.await.map_err(|e| format!("a connection task: {e}"))?;
        tally.latencies.extend(one.latencies);
        tally.errors += one.errors;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let lag = match pacer {
        Some(pacer) => {
            let mut lags = pacer.join().map_err(|_| "the pacer panicked".to_owned())?;
            lags.sort_unstable();
            format!(
                ", pacer lag p99 {} µs max {} µs",
                percentile(&lags, 0.99),
                lags.last().copied().unwrap_or(0)
            )
        }
        None => String::new(),
    };
    let latencies = &mut tally.latencies;
    latencies.sort_unstable();
    let answered = latencies.len() as u64;
    let offered = match args.rate {
        Some(rate) => format!("offered {rate:.0}/s"),
        None => "closed loop (max)".to_owned(),
    };
    let route = match args.route {
        Route::Verify => "verify",
        Route::Health => "health",
    };
    Ok(format!(
        "{route} {offered} over {} connections for {} s: {:.0}/s answered, p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs, {} errors{lag}",
        args.connections,
        args.seconds,
        answered as f64 / elapsed,
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        percentile(latencies, 0.999),
        latencies.last().copied().unwrap_or(0),
        tally.errors,
    ))
}

/// Hands out due times: request `i` is due at `start + i * interval`, on connection `i % N`.
/// Sleeps to the next due time and then hands out every one that has come, so a late wake-up
/// costs the requests it delayed their lateness (counted from the due time), not their place.
/// Returns how late each was handed out, in microseconds.
fn pace(
    queues: Vec<mpsc::UnboundedSender<Instant>>,
    start: Instant,
    end: Instant,
    interval: Duration,
) -> Vec<u64> {
    let total = ((end - start).as_secs_f64() / interval.as_secs_f64()) as u64;
    let mut lags = Vec::with_capacity(total as usize);
    let mut i = 0u64;
    while i < total {
        let due = start + interval.mul_f64(i as f64);
        let now = Instant::now();
        if let Some(wait) = due.checked_duration_since(now) {
            std::thread::sleep(wait);
            continue;
        }
        lags.push(now.duration_since(due).as_micros() as u64);
        // A closed queue is a connection that gave up (its task counted the error).
        let _ = queues[(i % queues.len() as u64) as usize].send(due);
        i += 1;
    }
    lags
}

/// Open loop: sends each due request as soon as the connection is free.
async fn connection_open(
    mut sender: http1::SendRequest<Full<Bytes>>,
    mut request: RequestMaker,
    mut due_times: mpsc::UnboundedReceiver<Instant>,
) -> Tally {
    let mut tally = Tally::default();
    while let Some(due) = due_times.recv().await {
        if !send(&mut sender, &mut request).await {
            tally.errors += 1;
            continue;
        }
        tally.latencies.push(due.elapsed().as_micros() as u64);
    }
    tally
}

/// Closed loop: the next request as soon as the last is answered, until `end`.
async fn connection_closed(
    mut sender: http1::SendRequest<Full<Bytes>>,
    mut request: RequestMaker,
    start: Instant,
    end: Instant,
) -> Tally {
    let mut tally = Tally::default();
    tokio::time::sleep_until(start.into()).await;
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        if send(&mut sender, &mut request).await {
            tally.latencies.push(sent.elapsed().as_micros() as u64);
        } else {
            tally.errors += 1;
        }
    }
    tally
}

/// One request and its whole answer; whether it was a 200.
async fn send(sender: &mut http1::SendRequest<Full<Bytes>>, request: &mut RequestMaker) -> bool {
    if sender.ready().await.is_err() {
        return false;
    }
    let Ok(response) = sender.send_request(request.next()).await else {
        return false;
    };
    let ok = response.status() == hyper::StatusCode::OK;
    ok && response.into_body().collect().await.is_ok()
}

/// Makes each connection's requests, walking the keys with a stride of the connection count so
/// that the connections together go through them in turn.
struct RequestMaker {
    route: Route,
    host: String,
    authorization: Bytes,
    keys: Arc<Vec<String>>,
    next: usize,
    step: usize,
}

impl RequestMaker {
    fn next(&mut self) -> Request<Full<Bytes>> {
        let builder = Request::builder()
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::AUTHORIZATION, self.authorization.as_ref());
        let built = match self.route {
            Route::Health => builder
                .method(hyper::Method::GET)
                .uri("/v1/sys/health")
                .body(Full::new(Bytes::new())),
            Route::Verify => {
                let key = &self.keys[self.next % self.keys.len()];
                self.next = self.next.wrapping_add(self.step);
                builder
                    .method(hyper::Method::POST)
                    .uri("/v1/keys/verify")
                    .header(hyper::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(format!(
                        r#"{{"key":"{key}","cost":0}}"#
                    ))))
            }
        };
        // Every part is a constant or came from the command line as text: a bad token or
        // address fails here at the first request, which is the right place to stop.
        #[allow(clippy::expect_used)]
        built.expect("a valid request")
    }
}

/// The value at fraction `p` of sorted `values` (0 when empty).
fn percentile(values: &[u64], p: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values[((values.len() as f64 * p) as usize).min(values.len() - 1)]
}

/// This process's CPU time so far (user and system), from `/proc/self/stat` (Linux; clock ticks
/// of 1/100 s, as USER_HZ is on every Linux architecture this runs on).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}
