//! cosim benchmarks, as one binary (`cargo bench --bench cosim_bench`): the suite that
//! `cosim bench` also runs, kept in one file (src/bin/cosim/suite.rs) and included here.
//! Flags: `--json PATH`, `--label TEXT`, `--cpu-only`, `--gpu-only`, `--device-ordinal N`.

#[path = "../src/bin/cosim/suite.rs"]
mod suite;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1).cloned())
    };
    suite::run(&suite::SuiteOptions {
        json: value("--json"),
        label: value("--label").unwrap_or_default(),
        cpu_only: flag("--cpu-only"),
        gpu_only: flag("--gpu-only"),
        ordinal: value("--device-ordinal")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    })
}
