//! tracefs: where it is, mounting it where it is not, and the field offsets of a
//! tracepoint's `format` file (the send and KVM probes read their events' layouts there).
use std::{collections::HashMap, path::Path};

use anyhow::{anyhow, Result};

/// Where tracefs is (mounted by [`ensure_tracefs`] if it is not).
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs at [`TRACEFS`] unless it is there already (it is not mounted at boot on
/// every machine; see docs/platform.md).
pub fn ensure_tracefs() -> Result<()> {
    if Path::new(TRACEFS).join("events").is_dir() {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (src, dst) = (c("tracefs"), c(TRACEFS));
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(anyhow!(
            "mounting tracefs on {TRACEFS}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Field offsets from a tracepoint `format` file: name -> (offset, size).
pub fn parse_format(text: &str) -> HashMap<String, (u32, u32)> {
    let mut m = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("field:") else {
            continue;
        };
        let parts: Vec<&str> = rest.split(';').map(str::trim).collect();
        let num = |key: &str| {
            parts
                .iter()
                .find_map(|p| p.strip_prefix(key))
                .and_then(|v| v.parse::<u32>().ok())
        };
        let (Some(off), Some(size)) = (num("offset:"), num("size:")) else {
            continue;
        };
        // "unsigned int len", "__data_loc char[] name": the name is the last word.
        if let Some(name) = parts[0].split_whitespace().last() {
            m.insert(name.trim_end_matches("[]").to_string(), (off, size));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_offsets() {
        let f = parse_format(
            "name: net_dev_xmit\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:unsigned int len;\toffset:16;\tsize:4;\tsigned:0;\n\tfield:int rc;\toffset:20;\tsize:4;\tsigned:1;\n\tfield:__data_loc char[] name;\toffset:24;\tsize:4;\tsigned:0;\n",
        );
        assert_eq!(f["len"], (16, 4));
        assert_eq!(f["rc"], (20, 4));
        assert_eq!(f["name"], (24, 4));
        assert_eq!(f["common_type"], (0, 2));
    }
}
