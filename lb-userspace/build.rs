//! Embeds the XDP object built by `cargo xtask build` (path in XVIP_EBPF_OBJ, or the default
//! target path). Without it the daemon still builds, and says how to get the object.

use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=XVIP_EBPF_OBJ");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let src = std::env::var("XVIP_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join("../target/bpfel-unknown-none/release/lb-ebpf"));
    println!("cargo::rerun-if-changed={}", src.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("lb-ebpf.o");
    match std::fs::read(&src) {
        Ok(bytes) => std::fs::write(&out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo::warning=XDP object {} not found: build with `cargo xtask build`",
                src.display()
            );
            std::fs::write(&out, []).unwrap();
        }
    }
}
