//! Pressure stall information (/proc/pressure/{cpu,memory,io}).

use nodewatch_proto::pb;

use super::SamplerError;
use crate::sys::procfile::{ProcFile, fields, lines, parse_f64, parse_u64};

/// One kept-open PSI file. Absent (`None` from [`PressureFile::open`]) when the
/// kernel has no PSI (built without it, or booted with `psi=0`).
#[derive(Debug)]
pub(crate) struct PressureFile {
    file: ProcFile,
}

impl PressureFile {
    /// Opens `/proc/pressure/<resource>`; `None` when the kernel does not offer it.
    pub(crate) fn open(resource: &str) -> Option<Self> {
        let mut file = ProcFile::open(format!("/proc/pressure/{resource}")).ok()?;
        // With psi=0 the file exists but reading it fails (EOPNOTSUPP).
        file.read().ok()?;
        Some(Self { file })
    }

    /// Reads and parses the current pressure figures.
    pub(crate) fn read(&mut self) -> Result<pb::Pressure, SamplerError> {
        let content = self.file.read()?;
        parse_pressure(content).ok_or_else(|| SamplerError::Parse {
            path: self.file.path().to_path_buf(),
            reason: "unexpected pressure line",
        })
    }
}

/// Parses the content of a /proc/pressure file. `full` stays zero when the file
/// has no `full` line (cpu on kernels before 5.13).
pub(crate) fn parse_pressure(content: &[u8]) -> Option<pb::Pressure> {
    let mut p = pb::Pressure::default();
    let mut seen_some = false;
    for line in lines(content) {
        let mut it = fields(line);
        let kind = it.next()?;
        let (mut a10, mut a60, mut a300, mut total) = (None, None, None, None);
        for field in it {
            let eq = field.iter().position(|&b| b == b'=')?;
            let (key, value) = (&field[..eq], &field[eq + 1..]);
            match key {
                b"avg10" => a10 = parse_f64(value),
                b"avg60" => a60 = parse_f64(value),
                b"avg300" => a300 = parse_f64(value),
                b"total" => total = parse_u64(value),
                _ => {}
            }
        }
        let (a10, a60, a300, total) = (a10?, a60?, a300?, total?);
        match kind {
            b"some" => {
                seen_some = true;
                p.some_avg10 = a10;
                p.some_avg60 = a60;
                p.some_avg300 = a300;
                p.some_total_us = total;
            }
            b"full" => {
                p.full_avg10 = a10;
                p.full_avg60 = a60;
                p.full_avg300 = a300;
                p.full_total_us = total;
            }
            _ => return None,
        }
    }
    seen_some.then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_real_io_pressure() {
        let p = parse_pressure(include_bytes!("fixtures/pressure_io")).unwrap();
        assert_eq!(p.some_avg10, 0.01);
        assert_eq!(p.some_avg60, 0.15);
        assert_eq!(p.some_avg300, 0.31);
        assert_eq!(p.some_total_us, 5_630_569);
        assert_eq!(p.full_avg60, 0.12);
        assert_eq!(p.full_avg300, 0.26);
        assert_eq!(p.full_total_us, 4_948_129);
    }

    #[test]
    fn cpu_pressure_without_full_line() {
        let p = parse_pressure(b"some avg10=1.50 avg60=0.25 avg300=0.00 total=42\n").unwrap();
        assert_eq!(p.some_avg10, 1.5);
        assert_eq!(p.some_total_us, 42);
        assert_eq!(p.full_total_us, 0);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_pressure(b"some avg10=x avg60=0 avg300=0 total=1\n").is_none());
        assert!(parse_pressure(b"").is_none());
        assert!(parse_pressure(b"weird avg10=0 avg60=0 avg300=0 total=1\n").is_none());
    }
}
