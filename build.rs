//! Compiles `kernels/*.cu` with nvcc into fatbins (sm_80 + sm_90 SASS, compute_80 PTX) that the
//! crate embeds. Without nvcc the crate still builds, without kernels (the CUDA backend then
//! returns `Error::KernelsNotBuilt`), unless `COSIM_REQUIRE_KERNELS=1` makes that a failure.
//! Register spills reported by ptxas fail the build.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Kernel families: one `.cu` file and one embedded fatbin each.
const FAMILIES: &[&str] = &["along", "rows", "pairwise", "backward", "pair_backward"];
const GENCODE: &[&str] = &[
    "arch=compute_80,code=sm_80",
    "arch=compute_90,code=sm_90",
    "arch=compute_80,code=compute_80",
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(cosim_kernels)");
    println!("cargo::rerun-if-changed=kernels");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "PATH",
        "COSIM_REQUIRE_KERNELS",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let require = env::var("COSIM_REQUIRE_KERNELS").is_ok_and(|v| v == "1");
    let Some(nvcc) = find_nvcc() else {
        let looked =
            "looked at $NVCC, $CUDA_HOME/bin, $CUDA_PATH/bin, $PATH, /usr/local/cuda/bin, \
                      ./.venv-nvcc; scripts/install-nvcc.sh installs one and prints its path";
        if require {
            panic!("COSIM_REQUIRE_KERNELS=1 but nvcc was not found ({looked})");
        }
        println!("cargo::warning=nvcc not found, building without CUDA kernels ({looked})");
        return;
    };
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let about = Command::new(&nvcc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    let version = about.lines().last().unwrap_or_default().to_owned();
    // "Cuda compilation tools, release 13.0, V13.0.88": the CUDA version the kernels need
    // of the driver (same major, or newer), reported by `cosim info` and load errors.
    let release = about
        .split("release ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let jobs: Vec<_> = FAMILIES
        .iter()
        .map(|fam| {
            let (nvcc, out) = (nvcc.clone(), out.clone());
            std::thread::spawn(move || compile(&nvcc, fam, &out))
        })
        .collect();
    for job in jobs {
        if let Err(e) = job.join().expect("nvcc thread") {
            panic!("{e}");
        }
    }
    println!("cargo::rustc-cfg=cosim_kernels");
    println!("cargo::rustc-env=COSIM_NVCC={} ({version})", nvcc.display());
    println!("cargo::rustc-env=COSIM_ARCHS=sm_80 sm_90 compute_80");
    println!("cargo::rustc-env=COSIM_KERNELS_CUDA={release}");
}

fn compile(nvcc: &Path, family: &str, out: &Path) -> Result<(), String> {
    let src = Path::new("kernels").join(format!("{family}.cu"));
    let dst = out.join(format!("{family}.fatbin"));
    let mut cmd = Command::new(nvcc);
    cmd.args([
        "-fatbin",
        "-O3",
        "-std=c++17",
        "-Ikernels",
        "-Xptxas",
        "-v",
        "-Werror",
        "all-warnings",
        // Compressed images (the driver inflates them at load): the pairwise family's many
        // tile kernels are ~12 MB raw, ~2 MB compressed, in every binary that embeds them.
        "-Xfatbin",
        "-compress-all",
    ]);
    for g in GENCODE {
        cmd.args(["-gencode", g]);
    }
    cmd.arg(&src).arg("-o").arg(&dst);
    let o = cmd
        .output()
        .map_err(|e| format!("running {}: {e}", nvcc.display()))?;
    let log = String::from_utf8_lossy(&o.stderr);
    if !o.status.success() {
        return Err(format!("nvcc failed on {}:\n{log}", src.display()));
    }
    // ptxas -v prints "N bytes spill stores, M bytes spill loads" per kernel and arch.
    let spills: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("spill") && !l.contains(" 0 bytes spill stores, 0 bytes spill loads")
        })
        .collect();
    if !spills.is_empty() {
        return Err(format!(
            "register spills in {}:\n{}\n{log}",
            src.display(),
            spills.join("\n")
        ));
    }
    Ok(())
}

fn find_nvcc() -> Option<PathBuf> {
    let exe = |p: PathBuf| p.is_file().then_some(p);
    if let Some(p) = env::var_os("NVCC") {
        return exe(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = env::var_os(var).and_then(|h| exe(PathBuf::from(h).join("bin/nvcc"))) {
            return Some(p);
        }
    }
    if let Some(p) = env::var_os("PATH")
        .and_then(|path| env::split_paths(&path).find_map(|d| exe(d.join("nvcc"))))
    {
        return Some(p);
    }
    if let Some(p) = exe(PathBuf::from("/usr/local/cuda/bin/nvcc")) {
        return Some(p);
    }
    // The venv that scripts/install-nvcc.sh makes.
    let venv = Path::new(".venv-nvcc/lib");
    std::fs::read_dir(venv)
        .ok()?
        .flatten()
        .find_map(|py| exe(py.path().join("site-packages/nvidia/cu13/bin/nvcc")))
}
