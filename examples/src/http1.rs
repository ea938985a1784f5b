//! A minimal keep-alive HTTP/1.1 client for the farm simulator's hot loop: one connection
//! per simulated worker, each request written from one reused buffer, each answer parsed
//! in place with `httparse`. The load generator then costs the machine little next to the
//! Manager it measures (docs/performance.md, "The ceiling": it must reach `wrk`'s rate).
//!
//! Plain `http://` only (the simulator uses reqwest for `https://`). Answers framed by
//! `Content-Length`, `Transfer-Encoding: chunked` or the end of the connection are read;
//! a request on a reused connection that the server closed in the meantime (an idle
//! keep-alive timeout) is sent again once on a new connection, as browsers and reqwest do.

use std::io::{self, Write};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most bytes of one answer (head and body) the client reads before giving up.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// One keep-alive connection to one server, with fixed request headers.
pub struct Conn {
    /// `host:port` to connect to.
    addr: String,
    /// `host: …`, `authorization: …` (once set) and `user-agent: …` lines.
    fixed: Vec<u8>,
    /// Where the `authorization` line starts in `fixed` (it is replaced by
    /// [`Conn::set_basic_auth`]).
    auth_at: usize,
    stream: Option<TcpStream>,
    out: Vec<u8>,
    buf: Vec<u8>,
    chunked: Vec<u8>,
}

/// Where an answer's body is: in the read buffer, or in the de-chunked copy.
enum BodyAt {
    Buf(usize, usize),
    Chunked,
}

/// The `host:port` of a plain `http://` base URL, or `None` for any other URL.
pub fn http_authority(base: &str) -> Option<&str> {
    let rest = base.strip_prefix("http://")?;
    let authority = rest.split('/').next().unwrap_or(rest);
    (!authority.is_empty()).then_some(authority)
}

impl Conn {
    /// A client for `authority` (`host:port`); connects on the first request.
    pub fn new(authority: &str, user_agent: &str) -> Conn {
        let mut fixed = Vec::with_capacity(256);
        fixed.extend_from_slice(b"host: ");
        fixed.extend_from_slice(authority.as_bytes());
        fixed.extend_from_slice(b"\r\n");
        let auth_at = fixed.len();
        fixed.extend_from_slice(b"user-agent: ");
        fixed.extend_from_slice(user_agent.as_bytes());
        fixed.extend_from_slice(b"\r\naccept: */*\r\n");
        Conn {
            addr: authority.to_string(),
            fixed,
            auth_at,
            stream: None,
            out: Vec::with_capacity(4096),
            buf: Vec::with_capacity(8192),
            chunked: Vec::new(),
        }
    }

    /// Send `authorization: Basic base64(user:password)` with every request from now on.
    pub fn set_basic_auth(&mut self, user: &str, password: &str) {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let line = format!("authorization: Basic {token}\r\n");
        // Drop an earlier authorization line (it ends at the next "\r\n").
        if self.fixed[self.auth_at..].starts_with(b"authorization: ") {
            let end = self.fixed[self.auth_at..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(self.fixed.len(), |p| self.auth_at + p + 2);
            self.fixed.drain(self.auth_at..end);
        }
        let at = self.auth_at;
        self.fixed.splice(at..at, line.into_bytes());
    }

    /// Close the connection (the next request opens a new one).
    pub fn close(&mut self) {
        self.stream = None;
    }

    /// Send `method` to the path made of `path` (concatenated) with an optional JSON
    /// body; returns the status and the body of the answer.
    pub async fn send(
        &mut self,
        method: &str,
        path: &[&str],
        body: Option<&[u8]>,
    ) -> io::Result<(u16, &[u8])> {
        self.out.clear();
        self.out.extend_from_slice(method.as_bytes());
        self.out.push(b' ');
        for part in path {
            self.out.extend_from_slice(part.as_bytes());
        }
        self.out.extend_from_slice(b" HTTP/1.1\r\n");
        self.out.extend_from_slice(&self.fixed);
        match body {
            Some(b) => {
                self.out
                    .extend_from_slice(b"content-type: application/json\r\ncontent-length: ");
                // Writing to a Vec cannot fail.
                let _ = write!(self.out, "{}\r\n\r\n", b.len());
                self.out.extend_from_slice(b);
            }
            None if method != "GET" => self.out.extend_from_slice(b"content-length: 0\r\n\r\n"),
            None => self.out.extend_from_slice(b"\r\n"),
        }
        let reused = self.stream.is_some();
        let answer = match self.exchange().await {
            Err(e) if reused && e.kind() == io::ErrorKind::ConnectionAborted => {
                // The server closed the idle connection before reading the request.
                self.stream = None;
                self.exchange().await
            }
            other => other,
        };
        match answer {
            Ok((status, BodyAt::Buf(from, to))) => Ok((status, &self.buf[from..to])),
            Ok((status, BodyAt::Chunked)) => Ok((status, &self.chunked[..])),
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    /// Write `out` and read one answer; `ConnectionAborted` when the connection closed
    /// before any byte of the answer came.
    async fn exchange(&mut self) -> io::Result<(u16, BodyAt)> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(io::Error::other("no connection"));
        };
        if let Err(e) = stream.write_all(&self.out).await {
            return Err(match e.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => {
                    io::Error::new(io::ErrorKind::ConnectionAborted, e)
                }
                _ => e,
            });
        }
        self.buf.clear();
        // The head.
        let (status, head_len, length, chunked, close) = loop {
            if read_more(stream, &mut self.buf).await? == 0 {
                return Err(if self.buf.is_empty() {
                    io::Error::new(io::ErrorKind::ConnectionAborted, "closed before the answer")
                } else {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "closed in the answer's head")
                });
            }
            let mut headers = [httparse::EMPTY_HEADER; 48];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let status = resp.code.unwrap_or(0);
                    let mut length = None;
                    let mut chunked = false;
                    let mut close = false;
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<usize>().ok());
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h.value.eq_ignore_ascii_case(b"chunked");
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = h.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    break (status, head_len, length, chunked, close);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
                }
            }
        };
        let no_body = status == 204 || status == 304 || (100..200).contains(&status);
        let at = if no_body {
            BodyAt::Buf(head_len, head_len)
        } else if chunked {
            self.chunked.clear();
            let mut pos = head_len;
            loop {
                match httparse::parse_chunk_size(&self.buf[pos..]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        let size = usize::try_from(size)
                            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "chunk"))?;
                        let end = pos + used + size + 2;
                        if self.buf.len() >= end {
                            self.chunked
                                .extend_from_slice(&self.buf[pos + used..pos + used + size]);
                            pos = end;
                            if size == 0 {
                                break BodyAt::Chunked;
                            }
                            continue;
                        }
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))
                    }
                }
                if read_more(stream, &mut self.buf).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed in a chunked body",
                    ));
                }
            }
        } else if let Some(length) = length {
            while self.buf.len() < head_len + length {
                if read_more(stream, &mut self.buf).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed in the body",
                    ));
                }
            }
            BodyAt::Buf(head_len, head_len + length)
        } else {
            // Delimited by the end of the connection.
            while read_more(stream, &mut self.buf).await? > 0 {}
            self.stream = None;
            return Ok((status, BodyAt::Buf(head_len, self.buf.len())));
        };
        if close {
            self.stream = None;
        }
        Ok((status, at))
    }
}

/// Read what is there (at least one byte, or 0 at the end) onto the end of `buf`.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    if buf.len() >= MAX_ANSWER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "answer larger than 64 MiB",
        ));
    }
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(buf.capacity().max(8192));
    }
    stream.read_buf(buf).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with the next canned answer.
    async fn serve(answers: Vec<&'static [u8]>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            for answer in answers {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(answer).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_length_chunked_and_empty_answers_on_one_connection() {
        let addr = serve(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let mut c = Conn::new(&addr, "test");
        c.set_basic_auth("id", "secret");
        let (s, b) = c.send("GET", &["/a"], None).await.unwrap();
        assert_eq!((s, b), (200, &b"hello"[..]));
        let (s, b) = c.send("POST", &["/b/", "x"], Some(b"{}")).await.unwrap();
        assert_eq!((s, b), (200, &b"abcde"[..]));
        let (s, b) = c.send("POST", &["/c"], None).await.unwrap();
        assert_eq!((s, b.len()), (204, 0));
    }

    #[test]
    fn authorization_is_replaced_not_added() {
        let mut c = Conn::new("h:1", "ua");
        c.set_basic_auth("a", "b");
        c.set_basic_auth("c", "d");
        let text = String::from_utf8(c.fixed.clone()).unwrap();
        assert_eq!(text.matches("authorization").count(), 1, "{text}");
        assert!(text.contains("Basic Yzpk"), "{text}");
        assert!(text.starts_with("host: h:1\r\nauthorization: "), "{text}");
    }

    #[test]
    fn only_plain_http_urls_have_an_authority() {
        assert_eq!(
            http_authority("http://127.0.0.1:8083"),
            Some("127.0.0.1:8083")
        );
        assert_eq!(http_authority("http://h:1/x"), Some("h:1"));
        assert_eq!(http_authority("https://h:1"), None);
    }
}
