//! Value parsers: each takes a setting's raw text and returns the value or what is wrong with
//! it (the caller adds the setting's name and source). Durations are integer seconds, or an
//! integer with a unit: `500ms`, `30s`, `10m`, `1h`, `7d`. Sizes and counts are integers.

use std::net::SocketAddr;
use std::time::Duration;

/// An integer in `min..=max`.
pub fn count(v: &str, min: usize, max: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be an integer between {min} and {max}")),
    }
}

/// An integer with an optional unit (`ms`, `s`, `m`, `h`, `d`) in `min..=max`; a bare integer
/// is seconds.
pub fn duration(v: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = v.split_at(digits);
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => u64::MAX,
    };
    let parsed = number
        .parse::<u64>()
        .ok()
        .filter(|_| millis_per_unit != u64::MAX)
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis);
    match parsed {
        Some(d) if d >= min && d <= max => Ok(d),
        Some(_) => Err(format!(
            "must be between {} and {}",
            show_duration(min),
            show_duration(max)
        )),
        None => Err(format!(
            "`{v}` is not a duration (integer seconds, or e.g. 500ms, 30s, 10m, 1h, 7d)"
        )),
    }
}

/// A duration the way the user would write it, for errors: `0s`, `300ms`, `1h`, `7d`.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".to_owned(),
        _ if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// An `IP:PORT` socket address; `example` is shown in the error.
pub fn socket_addr(v: &str, example: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| format!("`{v}` is not an IP:PORT address (e.g. {example})"))
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, in any case).
pub fn boolean(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("`{v}` is not true or false")),
    }
}

/// The value of the choice named `v` (exactly, case included).
pub fn one_of<T: Clone>(v: &str, choices: &[(&str, T)]) -> Result<T, String> {
    match choices.iter().find(|(name, _)| *name == v) {
        Some((_, value)) => Ok(value.clone()),
        None => {
            let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
            Err(format!("`{v}` is not one of: {}", names.join(", ")))
        }
    }
}

/// `HOST:PORT` with a non-empty printable host and a port 1-65535 (no DNS lookup: a host name
/// is resolved when it is dialled).
pub fn is_host_port(v: &str) -> bool {
    v.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_graphic())
            && port.parse::<u16>().is_ok_and(|p| p != 0)
    })
}

/// A tracing env-filter directive (`--log`), checked to parse.
pub fn log_filter(v: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(v)
        .map(|_| v.to_owned())
        .map_err(|e| format!("`{v}`: {e}"))
}
