//! The Prometheus side of the ingest bench: remote-write 1.0 messages (prompb),
//! the same samples mapped to them, and a keep-alive HTTP/1.1 client.

#[allow(unused_imports)]
use super::*;

/// prompb.WriteRequest.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct WriteRequest {
    /// Series with their samples.
    #[prost(message, repeated, tag = "1")]
    pub(super) timeseries: Vec<TimeSeries>,
}

/// prompb.TimeSeries.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct TimeSeries {
    /// Labels, sorted by name, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub(super) labels: Vec<Label>,
    /// Samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub(super) samples: Vec<Sample>,
}

/// prompb.Label.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub(super) name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub(super) value: String,
}

/// prompb.Sample.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct Sample {
    /// Value.
    #[prost(double, tag = "1")]
    pub(super) value: f64,
    /// Unix milliseconds.
    #[prost(int64, tag = "2")]
    pub(super) timestamp: i64,
}

/// Collects a batch's scalar samples as remote-write series.
pub(super) struct PromSink<'a> {
    pub(super) host: &'a str,
    pub(super) t_ms: i64,
    pub(super) out: Vec<TimeSeries>,
}

impl SampleSink for PromSink<'_> {
    fn scalar(&mut self, key: &str, value: f64) {
        let (metric, labels) = parse_key(key);
        let mut l: Vec<Label> = labels
            .into_iter()
            .map(|(k, v)| Label {
                name: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        l.push(Label {
            name: "__name__".into(),
            value: metric.to_string(),
        });
        l.push(Label {
            name: "host".into(),
            value: self.host.to_string(),
        });
        l.sort_by(|a, b| a.name.cmp(&b.name));
        self.out.push(TimeSeries {
            labels: l,
            samples: vec![Sample {
                value,
                timestamp: self.t_ms,
            }],
        });
    }

    // Remote-write 1.0 has no sparse histograms: they are left out of the Prometheus
    // load (the collector stores them on top of the same scalar samples).
    fn histogram(&mut self, _key: &str, _h: &pb::Histogram) {}
}

/// Counts a batch's samples.
#[derive(Default)]
pub(super) struct CountSink {
    pub(super) scalars: u64,
    pub(super) histograms: u64,
}

impl SampleSink for CountSink {
    fn scalar(&mut self, _key: &str, _value: f64) {
        self.scalars += 1;
    }
    fn histogram(&mut self, _key: &str, _h: &pb::Histogram) {
        self.histograms += 1;
    }
}

/// Minimal blocking HTTP/1.1 request on a fresh connection; returns status and body.
pub(super) fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&resp[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let mut body = resp[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, body))
}

pub(super) fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..pos]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < pos + 2 + n {
            break;
        }
        out.extend_from_slice(&b[pos + 2..pos + 2 + n]);
        b = &b[(pos + 4 + n).min(b.len())..];
    }
    out
}

/// Keep-alive remote-write sender (one connection per simulated agent).
pub(super) struct RemoteWriter {
    pub(super) addr: SocketAddr,
    pub(super) conn: Option<std::io::BufReader<TcpStream>>,
}

impl RemoteWriter {
    pub(super) fn post(&mut self, body: &[u8]) -> anyhow::Result<()> {
        use std::io::BufRead as _;
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr)?;
            s.set_nodelay(true)?;
            self.conn = Some(std::io::BufReader::new(s));
        }
        let conn = self.conn.as_mut().context("connection")?;
        let head = format!(
            "POST /api/v1/write HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nX-Prometheus-Remote-Write-Version: 0.1.0\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        conn.get_mut().write_all(head.as_bytes())?;
        conn.get_mut().write_all(body)?;
        let mut line = String::new();
        conn.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut len = 0usize;
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut rest = vec![0u8; len];
        conn.read_exact(&mut rest)?;
        if !(200..300).contains(&status) {
            bail!(
                "remote write answered {status}: {}",
                String::from_utf8_lossy(&rest)
            );
        }
        Ok(())
    }
}
