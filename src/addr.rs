//! Addresses as the resource file writes them: `HOST:PORT`, and the NBD
//! listen address (`HOST:PORT` or `unix:/PATH`). Parsed and checked here,
//! below both the configuration that reads them and the NBD server that
//! binds them.

use std::fmt;
use std::path::PathBuf;

/// An NBD listen address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `HOST:PORT`
    Tcp(String),
    /// `unix:/PATH`
    Unix(PathBuf),
}

impl ListenAddr {
    /// Parses `HOST:PORT` or `unix:/PATH`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("`unix:` needs a path, as in unix:/run/repd/r0.nbd".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(p)));
        }
        check_host_port(s).map(|()| ListenAddr::Tcp(s.to_owned()))
    }

    /// The NBD URI a client uses to reach `export` here.
    pub fn uri(&self, export: &str) -> String {
        match self {
            ListenAddr::Tcp(a) => {
                let a = a.replace("0.0.0.0", "127.0.0.1");
                format!("nbd://{a}/{export}")
            }
            ListenAddr::Unix(p) => format!("nbd+unix:///{export}?socket={}", p.display()),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => f.write_str(a),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Checks `HOST:PORT`: a host, a colon, a port from 1 to 65535.
pub fn check_host_port(s: &str) -> Result<(), String> {
    let bad = || format!("`{s}` is not HOST:PORT");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| format!("`{port}` in `{s}` is not a port number"))?;
    if port == 0 {
        return Err(format!("port 0 in `{s}` is not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_print_and_name_their_uri() {
        let t = ListenAddr::parse("0.0.0.0:10809").unwrap();
        assert_eq!(t.to_string(), "0.0.0.0:10809");
        assert_eq!(t.uri("r0"), "nbd://127.0.0.1:10809/r0");
        let u = ListenAddr::parse("unix:/run/repd/r0.nbd").unwrap();
        assert_eq!(u.to_string(), "unix:/run/repd/r0.nbd");
        assert_eq!(u.uri("r0"), "nbd+unix:///r0?socket=/run/repd/r0.nbd");
        assert!(ListenAddr::parse("unix:").unwrap_err().contains("needs a path"));
        assert!(check_host_port("host").unwrap_err().contains("not HOST:PORT"));
        assert!(check_host_port(":1").is_err());
        assert!(check_host_port("h:0").unwrap_err().contains("port 0"));
        assert!(check_host_port("h:65536").unwrap_err().contains("not a port number"));
        assert!(check_host_port("[::1]:7789").is_ok());
    }
}
