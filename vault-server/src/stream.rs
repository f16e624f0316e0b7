//! Response bodies streamed from a blocking writer: vault-core writes an export, an archive or a
//! backup synchronously into a [`ChannelWriter`] on the blocking pool, and [`streamed`] answers
//! with a body that reads the chunks. Memory stays bounded whatever the size, a client that goes
//! away ends the writer (its next send fails), and the status waits for the first chunk, so a
//! refusal before anything was written is answered as that error.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::error::ApiError;

/// Bytes gathered before a chunk is sent (sooner if [`CHUNK_AGE`] passes).
const CHUNK_BYTES: usize = 64 * 1024;
/// Longest a written byte waits in the writer before it is sent.
const CHUNK_AGE: Duration = Duration::from_millis(200);
/// Chunks in flight between the export and the response body.
pub(crate) const CHANNEL_CHUNKS: usize = 8;

/// The response whose body is the chunks from `rx`: its status waits for the first chunk, so an
/// error before anything was written is answered as that error.
pub(crate) async fn streamed(
    mut rx: mpsc::Receiver<Chunk>,
    content_type: &'static str,
) -> Result<Response, ApiError> {
    let first = match rx.recv().await {
        Some(Ok(chunk)) => chunk,
        Some(Err(e)) => return Err(e),
        None => Bytes::new(),
    };
    let rest = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        // An error after the first chunk cannot change the status: abort the body instead,
        // which the client sees as a truncated transfer.
        Some((item.map_err(|e| io::Error::other(e.message)), rx))
    });
    let stream = futures_util::stream::iter([Ok::<_, io::Error>(first)]).chain(rest);
    Ok((
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-store")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// A chunk for the body, or the error that ends it.
pub(crate) type Chunk = Result<Bytes, ApiError>;

/// A [`Write`] into the response body's channel, in chunks. Used on the blocking pool only
/// (`blocking_send` panics on an async worker). Its first write (the header line) is sent at
/// once, so that the status is answered as soon as the export has started.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
    started: bool,
    oldest: Instant,
    /// Writes so far: the clock is read on every 64th only (on every write it would cost the
    /// export a few percent).
    writes: u32,
}

impl ChannelWriter {
    pub(crate) fn new(tx: mpsc::Sender<Chunk>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: Vec::new(),
            started: false,
            oldest: Instant::now(),
            writes: 0,
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
        self.started = true;
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.is_empty() {
            self.oldest = Instant::now();
        }
        self.buf.extend_from_slice(data);
        self.writes = self.writes.wrapping_add(1);
        let stale = self.writes.is_multiple_of(64) && self.oldest.elapsed() >= CHUNK_AGE;
        if !self.started || self.buf.len() >= CHUNK_BYTES || stale {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
