//! `git http-backend` behind a small HTTP/1.1 server (std only): forwards the
//! `Git-Protocol` header, decodes chunked request bodies, can require basic
//! auth, can be switched to answer 503, disables Nagle, keeps connections alive.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Stats {
    /// Requests that carried `command=fetch` (a pack negotiation).
    pub fetch_commands: AtomicUsize,
    /// All requests.
    pub requests: AtomicUsize,
    /// Requests answered 401.
    pub unauthorized: AtomicUsize,
    /// Request heads and bodies as received (for secret searches).
    pub log: Mutex<Vec<String>>,
}

pub struct HttpServer {
    pub port: u16,
    pub stats: Arc<Stats>,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

struct Config {
    root: PathBuf,
    basic: Option<String>,
    bearer: Option<String>,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
}

impl HttpServer {
    /// Serves every repository under `root`; with `basic = Some((user, pass))`
    /// only requests with those credentials, with `bearer` only that token.
    pub fn start(root: &Path, basic: Option<(&str, &str)>, bearer: Option<&str>) -> Self {
        super::require_tool("git", &["--version"]);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stats = Arc::new(Stats::default());
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let config = Arc::new(Config {
            root: root.to_owned(),
            basic: basic.map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}").as_bytes()))),
            bearer: bearer.map(|t| format!("Bearer {t}")),
            down: down.clone(),
            stop: stop.clone(),
            stats: stats.clone(),
        });
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if config.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let config = config.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &config);
                });
            }
        });
        Self {
            port,
            stats,
            down,
            stop,
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// While set, every request is answered `503 Service Unavailable`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(stream: TcpStream, config: &Config) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while let Some(request) = read_request(&mut reader)? {
        record(config, &request);
        if config.down.load(Ordering::SeqCst) {
            respond(
                &mut writer,
                "503 Service Unavailable",
                &[],
                b"down for maintenance\n",
            )?;
            continue;
        }
        if !allowed(config, request.headers.get("authorization")) {
            config.stats.unauthorized.fetch_add(1, Ordering::SeqCst);
            respond(
                &mut writer,
                "401 Unauthorized",
                &[("WWW-Authenticate", "Basic realm=\"git\"")],
                b"authentication required\n",
            )?;
            continue;
        }
        let out = http_backend(config, request)?;
        let Some(cgi) = parse_cgi(&out) else {
            respond(
                &mut writer,
                "500 Internal Server Error",
                &[],
                b"bad cgi output\n",
            )?;
            continue;
        };
        let refs: Vec<(&str, &str)> = cgi
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        respond(&mut writer, &cgi.status, &refs, cgi.body)?;
    }
    Ok(())
}

/// One HTTP request as received.
struct Request {
    /// The request line, with its line end.
    line: String,
    method: String,
    target: String,
    /// Header names in lower case.
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Reads the next request on a kept-alive connection (`None`: closed).
fn read_request(reader: &mut impl BufRead) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("/").to_owned();
    let mut headers: HashMap<String, String> = HashMap::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        read_chunked(reader)?
    } else {
        let len = headers
            .get("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        body
    };
    Ok(Some(Request {
        line,
        method,
        target,
        headers,
        body,
    }))
}

/// Counts and logs the request.
fn record(config: &Config, request: &Request) {
    config.stats.requests.fetch_add(1, Ordering::SeqCst);
    {
        let mut log = config.stats.log.lock().expect("log");
        log.push(format!("{}{:?}", request.line, request.headers));
    }
    if request.body.windows(13).any(|w| w == b"command=fetch") {
        config.stats.fetch_commands.fetch_add(1, Ordering::SeqCst);
    }
}

/// Whether a request with this `Authorization` header is let in.
fn allowed(config: &Config, auth: Option<&String>) -> bool {
    match (&config.basic, &config.bearer) {
        (None, None) => true,
        (basic, bearer) => auth.is_some() && (auth == basic.as_ref() || auth == bearer.as_ref()),
    }
}

/// Runs `git http-backend` (CGI) for the request; returns its output.
fn http_backend(config: &Config, request: Request) -> std::io::Result<Vec<u8>> {
    let Request {
        method,
        target,
        headers,
        body,
        ..
    } = request;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &config.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(ct) = headers.get("content-type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(enc) = headers.get("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", enc);
    }
    if let Some(proto) = headers.get("git-protocol") {
        cmd.env("GIT_PROTOCOL", proto);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut out = Vec::new();
    child.stdout.take().expect("stdout").read_to_end(&mut out)?;
    let _ = feeder.join();
    child.wait()?;
    Ok(out)
}

/// What `git http-backend` answered.
struct CgiResponse<'a> {
    status: String,
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

/// Splits CGI output; `None` without a blank line after the headers.
fn parse_cgi(out: &[u8]) -> Option<CgiResponse<'_>> {
    let (head_end, sep) = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)))?;
    let head = String::from_utf8_lossy(&out[..head_end]).into_owned();
    let body = &out[head_end + sep..];
    let mut status = "200 OK".to_owned();
    let mut headers = Vec::new();
    for line in head.lines() {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("status") {
                status = v.trim().to_owned();
            } else {
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
    }
    Some(CgiResponse {
        status,
        headers,
        body,
    })
}

fn respond(
    w: &mut TcpStream,
    status: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut buf = out.into_bytes();
    buf.extend_from_slice(body);
    w.write_all(&buf)?;
    w.flush()
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_hex = size_line.trim().split(';').next().unwrap_or("0");
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if size == 0 {
            // trailers until an empty line
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
