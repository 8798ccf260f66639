//! A lean WebSocket client for load: the upgrade by hand, frames written masked with a zero
//! key, and server frames read straight from a buffer. A full client stack would spend more
//! CPU than the server under test; this one stays out of its way.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Opens a WebSocket to `path` on `addr` with a bearer session.
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    session: &str,
) -> io::Result<(FrameReader, OwnedWriteHalf)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {session}\r\n\r\n"
    );
    write.write_all(request.as_bytes()).await?;
    let mut reader = BufReader::with_capacity(16 * 1024, read);
    let mut status = String::new();
    reader.read_line(&mut status).await?;
    if !status.starts_with("HTTP/1.1 101") {
        return Err(io::Error::other(format!("upgrade refused: {}", status.trim())));
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Err(io::Error::other("closed during the upgrade"));
        }
        if line == "\r\n" {
            break;
        }
    }
    Ok((FrameReader { reader, payload: Vec::new() }, write))
}

/// Appends a masked text frame (mask key 0, so the payload goes as it is) to `out`.
pub fn text_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len < 65_536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// A masked pong frame with no payload.
pub const PONG: [u8; 6] = [0x8a, 0x80, 0, 0, 0, 0];

/// What the server sent.
pub enum Frame<'a> {
    Text(&'a [u8]),
    Ping,
    Close,
    Other,
}

/// Reads server frames (unmasked, as servers send them).
pub struct FrameReader {
    reader: BufReader<OwnedReadHalf>,
    payload: Vec<u8>,
}

impl FrameReader {
    /// The next frame; fragments of a message are returned one by one (servers here do not
    /// fragment).
    pub async fn next(&mut self) -> io::Result<Frame<'_>> {
        let mut head = [0u8; 2];
        self.reader.read_exact(&mut head).await?;
        let opcode = head[0] & 0x0f;
        let mut len = u64::from(head[1] & 0x7f);
        if len == 126 {
            let mut ext = [0u8; 2];
            self.reader.read_exact(&mut ext).await?;
            len = u64::from(u16::from_be_bytes(ext));
        } else if len == 127 {
            let mut ext = [0u8; 8];
            self.reader.read_exact(&mut ext).await?;
            len = u64::from_be_bytes(ext);
        }
        self.payload.resize(len as usize, 0);
        self.reader.read_exact(&mut self.payload).await?;
        Ok(match opcode {
            0x1 => Frame::Text(&self.payload),
            0x8 => Frame::Close,
            0x9 => Frame::Ping,
            _ => Frame::Other,
        })
    }
}

/// Finds `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads the decimal number at the start of `bytes`.
pub fn number(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&bytes[..digits]).ok()?.parse().ok()
}
