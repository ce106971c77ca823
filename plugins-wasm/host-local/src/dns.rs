//! The `resolvConf` file: the host reads it, since the plugin has no access
//! to host files, and this module turns its text into the result's `dns`.

use cniwasm_plugin_sdk::cniwasm_types::Dns;
use cniwasm_plugin_sdk::{CniError, dns, host_error};

/// Asks the host for the resolv.conf at `path` and parses it. A path the
/// policy does not allow fails with code 100, any other failure with 999,
/// as the reference plugin reports a file it cannot open.
pub fn read_resolv_conf(path: &str) -> Result<Dns, CniError> {
    let text = dns::read_resolv_conf(path).map_err(|error| {
        let mut error = host_error(&format!("failed to read resolvConf {path:?}"), error);
        error.msg.push_str(
            ": set ipam.resolvConf to a resolv.conf file that the node policy allows (resolvConf.paths)",
        );
        error
    })?;
    Ok(parse_resolv_conf(&text))
}

/// Parses resolv.conf text with the reference plugin's rules: blank lines,
/// lines starting with `#` or `;`, lines with one word and unknown keywords
/// are skipped. `nameserver` adds its first value, `domain` sets its first
/// value (the last line wins), and `search` and `options` add all their
/// values, also over several lines. Keywords are case-sensitive.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(keyword), Some(first)) = (words.next(), words.next()) else {
            continue;
        };

        match keyword {
            "nameserver" => dns.nameservers.push(first.to_string()),
            "domain" => dns.domain = first.to_string(),
            "search" => dns.search.extend(values(first, words)),
            "options" => dns.options.extend(values(first, words)),
            _ => {}
        }
    }
    dns
}

fn values<'a>(first: &'a str, rest: impl Iterator<Item = &'a str>) -> Vec<String> {
    std::iter::once(first)
        .chain(rest)
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_keyword() {
        let text = "# comment\n; other comment\n  nameserver 192.0.2.1  # inline\n\
            nameserver\t2001:db8::53\nnameserver\ndomain one.example\n\
            domain two.example extra\nsearch a.example b.example\nsearch c.example\r\n\
            options ndots:2 timeout:1\noptions rotate\nNAMESERVER 192.0.2.9\n\
            sortlist 10.0.0.0\n   \n";

        let dns = parse_resolv_conf(text);

        assert_eq!(dns.nameservers, ["192.0.2.1", "2001:db8::53"]);
        assert_eq!(dns.domain, "two.example");
        assert_eq!(dns.search, ["a.example", "b.example", "c.example"]);
        assert_eq!(dns.options, ["ndots:2", "timeout:1", "rotate"]);
    }

    #[test]
    fn empty_file_gives_empty_dns() {
        assert!(parse_resolv_conf("").is_empty());
        assert!(parse_resolv_conf("# only a comment\n\n").is_empty());
    }

    #[test]
    fn comment_must_start_line() {
        let dns = parse_resolv_conf("search a.example # b.example\n#nameserver 192.0.2.7\n");
        assert_eq!(dns.search, ["a.example", "#", "b.example"]);
        assert!(dns.nameservers.is_empty());
    }
}
