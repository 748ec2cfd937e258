//! RESP2 by hand: a command's encoding, a reply parser, and a raw
//! connection that pipelines and reads each reply with its own deadline
//! (to see exactly how many replies a request produced).

use super::*;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One RESP2 reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

/// Bulk strings shown as text, so that failures read well.
impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resp::Simple(s) => write!(f, "+{s}"),
            Resp::Error(e) => write!(f, "-{e}"),
            Resp::Int(i) => write!(f, ":{i}"),
            Resp::Bulk(None) | Resp::Array(None) => write!(f, "nil"),
            Resp::Bulk(Some(b)) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Resp::Array(Some(items)) => f.debug_list().entries(items).finish(),
        }
    }
}

impl Resp {
    /// The error text, if this is an error reply.
    pub fn error(&self) -> Option<&str> {
        match self {
            Resp::Error(e) => Some(e),
            _ => None,
        }
    }

    /// A simple string, or a bulk string as UTF-8.
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Simple(s) => Some(s.clone()),
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Resp::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// Whether this is `+PONG`.
    pub fn is_pong(&self) -> bool {
        matches!(self, Resp::Simple(s) if s == "PONG")
    }

    /// The 6-element `OKOME.PLAN.GET` reply; `Err` with the error text for
    /// an error reply, or a description of anything else.
    pub fn plan(&self) -> Result<Plan, String> {
        let items = match self {
            Resp::Error(e) => return Err(e.clone()),
            Resp::Array(Some(items)) if items.len() == 6 => items,
            other => return Err(format!("not a PLAN.GET reply: {other:?}")),
        };
        let opt_text = |r: &Resp| -> Result<Option<String>, String> {
            match r {
                Resp::Bulk(None) | Resp::Array(None) => Ok(None),
                Resp::Bulk(Some(b)) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
                Resp::Simple(s) => Ok(Some(s.clone())),
                other => Err(format!("not a string: {other:?}")),
            }
        };
        let opt_int = |r: &Resp| -> Result<Option<i64>, String> {
            match r {
                Resp::Bulk(None) | Resp::Array(None) => Ok(None),
                Resp::Int(i) => Ok(Some(*i)),
                other => Err(format!("not an integer: {other:?}")),
            }
        };
        Ok(Plan {
            status: opt_text(&items[0])?.ok_or("nil status")?,
            key: opt_text(&items[1])?.ok_or("nil key")?,
            value: opt_text(&items[2])?,
            ms: opt_int(&items[3])?,
            token: opt_text(&items[4])?,
            rate_remaining: opt_int(&items[5])?,
        })
    }
}

/// The RESP encoding of a command.
pub fn resp_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| p + from)
}

/// Parses one reply at `buf[at..]`: `Ok(None)` if it is not complete yet,
/// else the reply and the offset after it.
pub fn parse_resp(buf: &[u8], at: usize) -> Result<Option<(Resp, usize)>, String> {
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some(end) = find_crlf(buf, at + 1) else {
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[at + 1..end]).into_owned();
    let next = end + 2;
    let int = |s: &str| s.parse::<i64>().map_err(|e| format!("bad RESP {s:?}: {e}"));
    match tag {
        b'+' => Ok(Some((Resp::Simple(line), next))),
        b'-' => Ok(Some((Resp::Error(line), next))),
        b':' => Ok(Some((Resp::Int(int(&line)?), next))),
        b'$' => {
            let n = int(&line)?;
            if n < 0 {
                return Ok(Some((Resp::Bulk(None), next)));
            }
            let n = n as usize;
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            Ok(Some((
                Resp::Bulk(Some(buf[next..next + n].to_vec())),
                next + n + 2,
            )))
        }
        b'*' => {
            let n = int(&line)?;
            if n < 0 {
                return Ok(Some((Resp::Array(None), next)));
            }
            let mut items = Vec::with_capacity(n as usize);
            let mut pos = next;
            for _ in 0..n {
                match parse_resp(buf, pos)? {
                    Some((r, p)) => {
                        items.push(r);
                        pos = p;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Resp::Array(Some(items)), pos)))
        }
        other => Err(format!("bad RESP type byte {other:?} in {:?}", &buf[at..])),
    }
}

/// A plain TCP connection speaking RESP2: commands can be pipelined, and
/// every read has its own deadline, so a lost reply fails a test (as a
/// timeout) instead of hanging it, and an extra reply shows up as the
/// answer to the next command.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// `CLIENT ID` of this connection.
    pub id: i64,
    /// The peer closed the connection (EOF seen).
    pub closed: bool,
}

impl RawConn {
    pub fn connect(port: u16) -> RawConn {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut c = RawConn {
            stream,
            buf: Vec::new(),
            id: 0,
            closed: false,
        };
        c.id = c
            .call(&["CLIENT", "ID"], Duration::from_secs(10))
            .int()
            .expect("CLIENT ID");
        c
    }

    /// Sends one command (does not wait).
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.send_raw(&resp_command(args));
    }

    /// Sends several commands in one write (a pipeline).
    pub fn send_pipeline(&mut self, cmds: &[Vec<String>]) {
        let mut out = Vec::new();
        for c in cmds {
            out.extend(resp_command(c));
        }
        self.send_raw(&out);
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        if let Err(e) = self.stream.write_all(bytes) {
            // A killed connection: the next read reports it.
            if !matches!(
                e.kind(),
                ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ) {
                panic!("write: {e}");
            }
        }
    }

    fn take_parsed(&mut self) -> std::io::Result<Option<Resp>> {
        match parse_resp(&self.buf, 0) {
            Ok(Some((r, used))) => {
                self.buf.drain(..used);
                Ok(Some(r))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(std::io::Error::new(ErrorKind::InvalidData, e)),
        }
    }

    /// Reads the next reply, waiting at most `within`. A timeout is an
    /// error of kind `TimedOut`; a closed connection `UnexpectedEof`.
    pub fn read(&mut self, within: Duration) -> std::io::Result<Resp> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(r) = self.take_parsed()? {
                return Ok(r);
            }
            if self.closed {
                return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    format!("no reply within {within:?}"),
                ));
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_micros(100))))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.closed = true
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A reply if one is already complete (reads what has arrived, never
    /// waits).
    pub fn try_read(&mut self) -> std::io::Result<Option<Resp>> {
        if let Some(r) = self.take_parsed()? {
            return Ok(Some(r));
        }
        if self.closed {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
        }
        self.stream.set_nonblocking(true)?;
        let mut chunk = [0u8; 16 * 1024];
        let r = loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    break Ok(());
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.closed = true;
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        self.stream.set_nonblocking(false)?;
        r?;
        if let Some(r) = self.take_parsed()? {
            return Ok(Some(r));
        }
        if self.closed {
            return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "closed"));
        }
        Ok(None)
    }

    /// Sends a command and reads its reply (panics on a timeout or EOF).
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A], within: Duration) -> Resp {
        self.send(args);
        match self.read(within) {
            Ok(r) => r,
            Err(e) => panic!(
                "{:?}: {e}",
                args.iter()
                    .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// Bytes received but not yet parsed into a reply.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }
}
