//! Helpers of the `cosim` binary's end-to-end tests (tests/cli*.rs): a hand-built `.npy`
//! writer and reader (independent of the crate the binary reads them with), temporary
//! directories, and the checks every error path shares.
#![allow(dead_code, unused_imports)]

pub use assert_cmd::Command;
pub use cosim::{bf16, cpu, f16};
pub use rand::rngs::SmallRng;
pub use rand::{Rng, SeedableRng};
pub use std::path::{Path, PathBuf};
pub use tempfile::TempDir;

pub type Res = Result<(), Box<dyn std::error::Error>>;

/// A `.npy` file, version 1.0: magic, version, header length, header dict padded with spaces
/// and a newline so that the data starts at a multiple of 64 bytes.
pub fn npy_bytes(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims = match shape {
        [] => "()".to_string(),
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let order = if fortran { "True" } else { "False" };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {dims}, }}");
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(data);
    out
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("writing a test input");
    p
}

pub fn write_f32(dir: &Path, name: &str, shape: &[usize], v: &[f32]) -> PathBuf {
    write_file(dir, name, &npy_bytes("<f4", false, shape, &f32_bytes(v)))
}

/// A read-back `.npy`: its descr, shape and values widened to f64.
#[derive(Debug)]
pub struct Npy {
    pub descr: String,
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

/// Reads a C-order `.npy` of f2/f4/f8 little-endian floats (what the binary writes).
pub fn read_npy(path: &Path) -> Npy {
    let b = std::fs::read(path).expect("reading a result");
    parse_npy(&b, &path.display().to_string())
}

/// Parses the bytes of a C-order `.npy` of little-endian f2/f4/f8 floats or i8 integers.
pub fn parse_npy(b: &[u8], name: &str) -> Npy {
    assert_eq!(&b[..6], b"\x93NUMPY", "magic of {name}");
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        _ => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).expect("ascii header");
    let field = |key: &str| {
        let i = header.find(key).expect("header key") + key.len();
        header[i..].trim_start_matches([':', ' '])
    };
    let descr = field("'descr'")[1..]
        .split('\'')
        .next()
        .unwrap()
        .to_string();
    assert!(field("'fortran_order'").starts_with("False"));
    let dims = field("'shape'");
    let dims = &dims[1..dims.find(')').unwrap()];
    let shape: Vec<usize> = dims
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data = &b[start + hlen..];
    let values: Vec<f64> = match descr.as_str() {
        "<f2" => data
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        "<f4" => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        "<f8" => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        "<i8" => data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        d => panic!("unexpected descr {d}"),
    };
    assert_eq!(values.len(), shape.iter().product::<usize>(), "data length");
    Npy {
        descr,
        shape,
        values,
    }
}

/// Values in ±[0.1, 1), never near zero.
pub fn random(rng: &mut SmallRng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let m = rng.random_range(0.1f32..1.0);
            if rng.random_bool(0.5) {
                m
            } else {
                -m
            }
        })
        .collect()
}

pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
    }
}

pub fn widen<T: cosim::Element>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

pub fn cosim() -> Command {
    Command::cargo_bin("cosim").expect("the cosim binary is built for tests")
}

/// Input and output directories, kept apart so that "nothing left behind" is "out is empty".
pub struct Dirs {
    pub inp: TempDir,
    pub out: TempDir,
}

pub fn dirs() -> Dirs {
    Dirs {
        inp: TempDir::new().unwrap(),
        out: TempDir::new().unwrap(),
    }
}

pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Runs a command expected to fail: exit `code`, one `error:` line on stderr that mentions
/// every string in `names`, and nothing written to `out`.
pub fn assert_fails(cmd: &mut Command, code: i32, names: &[&str], out: &Path) -> String {
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in {err:?}"));
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "one error line: {err}"
    );
    for n in names {
        assert!(line.contains(n), "error line {line:?} should mention {n:?}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        files_in(out),
        Vec::<String>::new(),
        "files left in the output dir"
    );
    line.to_string()
}

/// Reads every entry of an `.npz` (a zip of `.npy` files) written by the binary, by name
/// without the `.npy` suffix, checking that entries are stored uncompressed.
pub fn read_npz(path: &Path) -> std::collections::BTreeMap<String, Npy> {
    use std::io::Read;
    let file = std::fs::File::open(path).expect("opening an .npz result");
    let mut zip = zip::ZipArchive::new(file).expect("an .npz is a zip archive");
    let mut out = std::collections::BTreeMap::new();
    for i in 0..zip.len() {
        let mut e = zip.by_index(i).unwrap();
        assert_eq!(e.compression(), zip::CompressionMethod::Stored);
        let name = e.name().unwrap().to_string();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        let key = name.strip_suffix(".npy").expect("entries are .npy files");
        out.insert(key.to_string(), parse_npy(&bytes, &name));
    }
    out
}

/// `cosim -q --device cpu pairwise A B <args>`, expected to succeed; returns stdout.
pub fn pairwise(a: &Path, b: &Path, args: &[&str], out: Option<&Path>) -> String {
    let mut c = cosim();
    c.args(["-q", "--device", "cpu", "pairwise"])
        .args([a, b])
        .args(args);
    if let Some(o) = out {
        c.arg("-o").arg(o);
    }
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "pairwise {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stderr), "", "-q prints nothing");
    String::from_utf8(o.stdout).unwrap()
}

/// The numbers after each label on stdout lines such as `batch 0: precision P recall R f1 F`
/// (f32 results, printed as the shortest decimal that reads back as the same f32).
pub fn stdout_values(text: &str, label: &str) -> Vec<f64> {
    text.lines()
        .map(|l| {
            let i = l.find(&format!("{label} ")).expect("label on each line") + label.len() + 1;
            let v: f32 = l[i..].split(' ').next().unwrap().parse().unwrap();
            v as f64
        })
        .collect()
}
