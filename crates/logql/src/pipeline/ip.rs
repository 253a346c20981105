//! `ip("...")`: an address, a range `a-b` or a CIDR `a/n`, found anywhere in
//! a line or label value.

use std::net::IpAddr;

use super::PipelineError;

#[derive(Debug, Clone)]
pub struct IpMatcher {
    lo: u128,
    hi: u128,
    v4: bool,
}

fn to_u128(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, true),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (u32::from(v4) as u128, true),
            None => (u128::from(a), false),
        },
    }
}

impl IpMatcher {
    pub fn new(pattern: &str) -> Result<Self, PipelineError> {
        let invalid = || PipelineError::InvalidIp(pattern.to_string());
        let pattern = pattern.trim();
        if let Some((addr, bits)) = pattern.split_once('/') {
            let ip: IpAddr = addr.trim().parse().map_err(|_| invalid())?;
            let bits: u32 = bits.trim().parse().map_err(|_| invalid())?;
            let (v, v4) = to_u128(ip);
            let width = if v4 { 32 } else { 128 };
            if bits > width {
                return Err(invalid());
            }
            let host_bits = width - bits;
            let mask: u128 = if host_bits == 128 {
                u128::MAX
            } else {
                (1u128 << host_bits) - 1
            };
            return Ok(Self {
                lo: v & !mask,
                hi: v | mask,
                v4,
            });
        }
        if let Some((a, b)) = pattern.split_once('-') {
            let (lo, v4a) = to_u128(a.trim().parse().map_err(|_| invalid())?);
            let (hi, v4b) = to_u128(b.trim().parse().map_err(|_| invalid())?);
            if v4a != v4b || lo > hi {
                return Err(invalid());
            }
            return Ok(Self { lo, hi, v4: v4a });
        }
        let (v, v4) = to_u128(pattern.parse().map_err(|_| invalid())?);
        Ok(Self { lo: v, hi: v, v4 })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (v, v4) = to_u128(ip);
        v4 == self.v4 && v >= self.lo && v <= self.hi
    }

    /// Whether `text` holds an address in the range.
    pub fn matches(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if !is_ip_char(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && is_ip_char(bytes[i]) {
                i += 1;
            }
            let candidate = text[start..i].trim_matches(|c| c == ':' || c == '.');
            if candidate.len() < 2 {
                continue;
            }
            match candidate.parse::<IpAddr>() {
                Ok(ip) => {
                    if self.contains(ip) {
                        return true;
                    }
                }
                // `1.2.3.4:80` and other IPv4 addresses glued with colons.
                Err(_) if candidate.contains('.') => {
                    let found = candidate
                        .split(':')
                        .filter_map(|part| part.parse::<std::net::Ipv4Addr>().ok())
                        .any(|ip| self.contains(IpAddr::V4(ip)));
                    if found {
                        return true;
                    }
                }
                Err(_) => {}
            }
        }
        false
    }
}

fn is_ip_char(b: u8) -> bool {
    b.is_ascii_hexdigit() || b == b'.' || b == b':'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let m = IpMatcher::new("192.168.1.0/24").unwrap();
        assert!(m.matches("src 192.168.1.10 ok"));
        assert!(!m.matches("src 10.0.0.9 ok"));
        assert!(!m.matches("no ip here"));
        assert!(m.matches("addr=192.168.1.5,"));
        let r = IpMatcher::new("192.168.1.1-192.168.1.9").unwrap();
        assert!(r.matches("192.168.1.5"));
        assert!(!r.matches("192.168.1.10"));
        let v6 = IpMatcher::new("2001:db8::/32").unwrap();
        assert!(v6.matches("client 2001:db8::1 connected"));
        assert!(!v6.matches("client 2001:db9::1"));
        assert!(
            IpMatcher::new("192.168.1.5")
                .unwrap()
                .matches("x=192.168.1.5")
        );
        assert!(IpMatcher::new("notanip").is_err());
        assert!(IpMatcher::new("").is_err());
        assert!(IpMatcher::new("10.0.0.0/33").is_err());
    }
}
