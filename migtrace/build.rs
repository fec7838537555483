//! Embeds the kernel programs when `cargo xtask build-ebpf` has built them.
//!
//! A build without the eBPF toolchain (a laptop, a docs build) still succeeds: it embeds an
//! empty object and `watch` then says that the eBPF programs are not in this build and which
//! backends remain. `MIGTRACE_EBPF_OBJ` overrides where the object is looked for.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(migtrace_has_ebpf)");
    println!("cargo::rerun-if-env-changed=MIGTRACE_EBPF_OBJ");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let obj = env::var_os("MIGTRACE_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/ebpf/bpfel-unknown-none/release/migtrace"));
    println!("cargo::rerun-if-changed={}", obj.display());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("migtrace.bpf.o");
    match fs::read(&obj) {
        Ok(bytes) if !bytes.is_empty() => {
            fs::write(&out, bytes).unwrap();
            println!("cargo::rustc-cfg=migtrace_has_ebpf");
        }
        _ => {
            fs::write(&out, b"").unwrap();
            println!(
                "cargo::warning=eBPF object not found at {}: building without kernel programs (run `cargo xtask build-ebpf`)",
                obj.display()
            );
        }
    }
}
