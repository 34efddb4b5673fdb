//! Proves that `src/cuda/params.rs`, the Rust mirror of `kernels/params.h`, is what bindgen
//! generates from the header today. Needs libclang (`apt-get install libclang-dev`), so it is
//! ignored by default; CI runs it with `--ignored`. `COSIM_UPDATE_BINDINGS=1` rewrites the file.

use std::path::Path;

fn generate() -> anyhow::Result<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = root.join("kernels/params.h");
    let bindings = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .allowlist_type("cosim_.*")
        .allowlist_var("COSIM_.*")
        .derive_default(true)
        .derive_debug(true)
        .derive_copy(true)
        .generate_comments(true)
        .layout_tests(true)
        .generate()
        .map_err(|e| anyhow::anyhow!("bindgen failed on {}: {e}", header.display()))?;
    Ok(bindings.to_string())
}

#[test]
#[ignore = "needs libclang (apt-get install libclang-dev); CI runs it"]
fn params_mirror_is_current() -> anyhow::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cuda/params.rs");
    let fresh = generate()?;
    if std::env::var("COSIM_UPDATE_BINDINGS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &fresh)?;
    }
    let committed = std::fs::read_to_string(&path)?;
    assert!(
        committed == fresh,
        "{} is stale: rerun with COSIM_UPDATE_BINDINGS=1 and commit the result",
        path.display()
    );
    Ok(())
}
