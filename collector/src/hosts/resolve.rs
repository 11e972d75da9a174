//! Host resolution: a host argument (host id, hostname, or a unique prefix of
//! either) to one host id. The registry and the store both resolve through here.

/// Why a host name did not resolve to one host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The name is empty.
    #[error("host must not be empty")]
    Empty,
    /// Nothing matched.
    #[error("no host matches {0:?}")]
    NotFound(String),
    /// More than one host matched.
    #[error("{0:?} matches {1} hosts; give more of the host id or the full hostname")]
    Ambiguous(String, usize),
}

/// Resolves `name` among `(host id, hostname)` pairs: an exact host id wins,
/// then an exact hostname, then a unique prefix of a host id or hostname.
pub fn resolve_host<'a>(
    name: &str,
    hosts: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> Result<String, ResolveError> {
    if name.is_empty() {
        return Err(ResolveError::Empty);
    }
    if hosts.clone().any(|(id, _)| id == name) {
        return Ok(name.to_string());
    }
    let exact: Vec<&str> = hosts
        .clone()
        .filter(|(_, hostname)| *hostname == name)
        .map(|(id, _)| id)
        .collect();
    let candidates = if exact.is_empty() {
        hosts
            .filter(|(id, hostname)| id.starts_with(name) || hostname.starts_with(name))
            .map(|(id, _)| id)
            .collect()
    } else {
        exact
    };
    match candidates.as_slice() {
        [] => Err(ResolveError::NotFound(name.to_string())),
        [one] => Ok((*one).to_string()),
        many => Err(ResolveError::Ambiguous(name.to_string(), many.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_then_hostname_then_unique_prefix() {
        let hosts = [("aa11", "web-1"), ("aa22", "web-2"), ("web-2x", "db")];
        let r = |name: &str| resolve_host(name, hosts.iter().copied());
        assert_eq!(r("aa11").unwrap(), "aa11");
        assert_eq!(r("web-2").unwrap(), "aa22"); // exact hostname beats the id prefix "web-2x"
        assert_eq!(r("aa1").unwrap(), "aa11");
        assert_eq!(r("d").unwrap(), "web-2x");
        assert_eq!(r("web"), Err(ResolveError::Ambiguous("web".into(), 3)));
        assert_eq!(r("zz"), Err(ResolveError::NotFound("zz".into())));
        assert_eq!(r(""), Err(ResolveError::Empty));
    }
}
