//! End-to-end tests of the `cosim` binary: small `.npy` files written here by a hand-built
//! writer (independent of the crate the binary reads them with), results read back by a
//! hand-built reader and compared with `cosim::cpu` on the same data; every error path is
//! checked for its exit code, a message naming the file, and no file left behind.

use assert_cmd::Command;
use cosim::{bf16, cpu, f16};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

type Res = Result<(), Box<dyn std::error::Error>>;

/// A `.npy` file, version 1.0: magic, version, header length, header dict padded with spaces
/// and a newline so that the data starts at a multiple of 64 bytes.
fn npy_bytes(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
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

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("writing a test input");
    p
}

fn write_f32(dir: &Path, name: &str, shape: &[usize], v: &[f32]) -> PathBuf {
    write_file(dir, name, &npy_bytes("<f4", false, shape, &f32_bytes(v)))
}

/// A read-back `.npy`: its descr, shape and values widened to f64.
#[derive(Debug)]
struct Npy {
    descr: String,
    shape: Vec<usize>,
    values: Vec<f64>,
}

/// Reads a C-order `.npy` of f2/f4/f8 little-endian floats (what the binary writes).
fn read_npy(path: &Path) -> Npy {
    let b = std::fs::read(path).expect("reading a result");
    parse_npy(&b, &path.display().to_string())
}

/// Parses the bytes of a C-order `.npy` of little-endian f2/f4/f8 floats or i8 integers.
fn parse_npy(b: &[u8], name: &str) -> Npy {
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
fn random(rng: &mut SmallRng, n: usize) -> Vec<f32> {
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

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
    }
}

fn widen<T: cosim::Element>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f64()).collect()
}

fn cosim() -> Command {
    Command::cargo_bin("cosim").expect("the cosim binary is built for tests")
}

/// Input and output directories, kept apart so that "nothing left behind" is "out is empty".
struct Dirs {
    inp: TempDir,
    out: TempDir,
}

fn dirs() -> Dirs {
    Dirs {
        inp: TempDir::new().unwrap(),
        out: TempDir::new().unwrap(),
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Runs a command expected to fail: exit `code`, one `error:` line on stderr that mentions
/// every string in `names`, and nothing written to `out`.
fn assert_fails(cmd: &mut Command, code: i32, names: &[&str], out: &Path) -> String {
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

#[test]
fn along_matches_the_library_on_the_cpu() -> Res {
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(1);
    let s = [3usize, 4, 5, 6];
    let (x, y) = (random(&mut rng, 360), random(&mut rng, 360));
    let a = write_f32(d.inp.path(), "a.npy", &s, &x);
    let b = write_f32(d.inp.path(), "b.npy", &s, &y);
    let out = d.out.path().join("s.npy");
    let o = cosim()
        .args(["--device", "cpu", "along"])
        .args([&a, &b])
        .args(["--dim", "1", "-o"])
        .arg(&out)
        .output()?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("device: CPU"), "{err}");
    assert!(
        err.contains("wrote ") && err.contains("s.npy: float32 [3, 5, 6]"),
        "{err}"
    );
    let got = read_npy(&out);
    let want = cpu::cosine_similarity(&x, &s, &y, &s, 1, None)?;
    assert_eq!(got.descr, "<f4");
    assert_eq!(got.shape, vec![3, 5, 6]);
    assert_close(&got.values, &widen(&want.values), 0.0, "dim 1");
    assert_eq!(files_in(d.out.path()), vec!["s.npy"]);
    Ok(())
}

#[test]
fn along_broadcasts_with_a_negative_dim_and_eps() -> Res {
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(2);
    let (s1, s2) = ([2usize, 3, 4], [1usize, 3, 1]);
    let (x, y) = (random(&mut rng, 24), random(&mut rng, 3));
    let a = write_f32(d.inp.path(), "a.npy", &s1, &x);
    let b = write_f32(d.inp.path(), "b.npy", &s2, &y);
    let out = d.out.path().join("s.npy");
    cosim()
        .args(["-q", "--device", "cpu", "along"])
        .args([&a, &b])
        .args(["--dim", "-2", "--eps", "1e-6", "-o"])
        .arg(&out)
        .assert()
        .success()
        .stderr("");
    let got = read_npy(&out);
    let want = cpu::cosine_similarity(&x, &s1, &y, &s2, -2, Some(1e-6))?;
    assert_eq!(got.shape, vec![2, 4]);
    assert_close(&got.values, &widen(&want.values), 0.0, "broadcast");
    Ok(())
}

#[test]
fn auto_device_says_which_it_used() -> Res {
    let d = dirs();
    let a = write_f32(d.inp.path(), "a.npy", &[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let out = d.out.path().join("s.npy");
    let o = cosim()
        .args(["along"])
        .args([&a, &a])
        .args(["--dim", "1", "-o"])
        .arg(&out)
        .output()?;
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let usable = cuda_usable();
    if usable {
        assert!(err.starts_with("device: CUDA"), "{err}");
    } else {
        assert!(err.starts_with("device: CPU"), "{err}");
        assert!(err.contains("GPU not used: "), "{err}");
    }
    let got = read_npy(&out);
    assert_close(&got.values, &[1.0, 1.0], 1e-6, "self-similarity");
    Ok(())
}

#[cfg(feature = "cuda")]
fn cuda_usable() -> bool {
    cosim::cuda::Cuda::new(0).is_ok()
}

#[cfg(not(feature = "cuda"))]
fn cuda_usable() -> bool {
    false
}

#[test]
fn explicit_cuda_without_a_usable_gpu_is_a_runtime_error() -> Res {
    if cuda_usable() {
        return Ok(()); // on a GPU machine the device works; nothing to refuse
    }
    let d = dirs();
    let a = write_f32(d.inp.path(), "a.npy", &[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let out = d.out.path().join("s.npy");
    let line = assert_fails(
        cosim()
            .args(["--device", "cuda", "along"])
            .args([&a, &a])
            .args(["--dim", "1", "-o"])
            .arg(&out),
        1,
        &["--device cuda:0"],
        d.out.path(),
    );
    #[cfg(feature = "cuda")]
    assert!(
        line.contains("driver") || line.contains("device") || line.contains("kernels"),
        "{line}"
    );
    let _ = line;
    Ok(())
}

#[test]
fn f16_in_f16_out() -> Res {
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(3);
    let s = [4usize, 8, 3];
    let x: Vec<f16> = random(&mut rng, 96)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let y: Vec<f16> = random(&mut rng, 96)
        .into_iter()
        .map(f16::from_f32)
        .collect();
    let bytes = |v: &[f16]| -> Vec<u8> { v.iter().flat_map(|h| h.to_le_bytes()).collect() };
    let a = write_file(
        d.inp.path(),
        "a.npy",
        &npy_bytes("<f2", false, &s, &bytes(&x)),
    );
    let b = write_file(
        d.inp.path(),
        "b.npy",
        &npy_bytes("<f2", false, &s, &bytes(&y)),
    );
    let out = d.out.path().join("s.npy");
    cosim()
        .args(["-q", "--device", "cpu", "along"])
        .args([&a, &b])
        .args(["--dim", "2", "-o"])
        .arg(&out)
        .assert()
        .success();
    let got = read_npy(&out);
    let want = cpu::cosine_similarity(&x, &s, &y, &s, 2, None)?;
    assert_eq!((got.descr.as_str(), got.shape.clone()), ("<f2", vec![4, 8]));
    assert_close(&got.values, &widen(&want.values), 0.0, "f16");
    Ok(())
}

#[test]
fn f64_in_f64_out_and_big_endian_input() -> Res {
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(4);
    let s = [5usize, 7];
    let x: Vec<f64> = random(&mut rng, 35).into_iter().map(f64::from).collect();
    let y: Vec<f64> = random(&mut rng, 35).into_iter().map(f64::from).collect();
    let le = |v: &[f64]| -> Vec<u8> { v.iter().flat_map(|h| h.to_le_bytes()).collect() };
    let be = |v: &[f64]| -> Vec<u8> { v.iter().flat_map(|h| h.to_be_bytes()).collect() };
    let a = write_file(d.inp.path(), "a.npy", &npy_bytes("<f8", false, &s, &le(&x)));
    let b = write_file(d.inp.path(), "b.npy", &npy_bytes(">f8", false, &s, &be(&y)));
    let out = d.out.path().join("s.npy");
    cosim()
        .args(["-q", "--device", "cpu", "along"])
        .args([&a, &b])
        .args(["--dim", "-1", "-o"])
        .arg(&out)
        .assert()
        .success();
    let got = read_npy(&out);
    let want = cpu::cosine_similarity(&x, &s, &y, &s, -1, None)?;
    assert_eq!((got.descr.as_str(), got.shape.clone()), ("<f8", vec![5]));
    assert_close(&got.values, &want.values, 0.0, "f64");
    Ok(())
}

#[test]
fn dtype_option_converts_inputs_and_output() -> Res {
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(5);
    let s = [6usize, 10];
    let (x, y) = (random(&mut rng, 60), random(&mut rng, 60));
    let a = write_f32(d.inp.path(), "a.npy", &s, &x);
    let b = write_f32(d.inp.path(), "b.npy", &s, &y);
    // f64: inputs widened exactly.
    let out = d.out.path().join("f64.npy");
    cosim()
        .args(["-q", "--device", "cpu", "--dtype", "f64", "along"])
        .args([&a, &b])
        .args(["--dim", "1", "-o"])
        .arg(&out)
        .assert()
        .success();
    let (xd, yd): (Vec<f64>, Vec<f64>) = (widen(&x), widen(&y));
    let want = cpu::cosine_similarity(&xd, &s, &yd, &s, 1, None)?;
    let got = read_npy(&out);
    assert_eq!(got.descr, "<f8");
    assert_close(&got.values, &want.values, 0.0, "--dtype f64");
    // bf16: computed in bf16, written as f32 (NumPy has no bf16), with a note.
    let out = d.out.path().join("bf16.npy");
    let o = cosim()
        .args(["--device", "cpu", "--dtype", "bf16", "along"])
        .args([&a, &b])
        .args(["--dim", "1", "-o"])
        .arg(&out)
        .output()?;
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("bfloat16"));
    let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
    let yb: Vec<bf16> = y.iter().map(|&v| bf16::from_f32(v)).collect();
    let want = cpu::cosine_similarity(&xb, &s, &yb, &s, 1, None)?;
    let got = read_npy(&out);
    assert_eq!((got.descr.as_str(), got.shape.clone()), ("<f4", vec![6]));
    assert_close(&got.values, &widen(&want.values), 0.0, "--dtype bf16");
    Ok(())
}

#[test]
fn fortran_order_input_is_read_in_c_order() -> Res {
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(6);
    let s = [3usize, 4, 5];
    let (x, y) = (random(&mut rng, 60), random(&mut rng, 60));
    // x in Fortran order: element (i, j, k) at i + 3j + 12k.
    let mut xf = vec![0f32; 60];
    for i in 0..3 {
        for j in 0..4 {
            for k in 0..5 {
                xf[i + 3 * j + 12 * k] = x[(i * 4 + j) * 5 + k];
            }
        }
    }
    let a = write_file(
        d.inp.path(),
        "a.npy",
        &npy_bytes("<f4", true, &s, &f32_bytes(&xf)),
    );
    let b = write_f32(d.inp.path(), "b.npy", &s, &y);
    let out = d.out.path().join("s.npy");
    cosim()
        .args(["-q", "--device", "cpu", "along"])
        .args([&a, &b])
        .args(["--dim", "1", "-o"])
        .arg(&out)
        .assert()
        .success();
    let want = cpu::cosine_similarity(&x, &s, &y, &s, 1, None)?;
    let got = read_npy(&out);
    assert_eq!(got.shape, vec![3, 5]);
    assert_close(&got.values, &widen(&want.values), 0.0, "fortran");
    Ok(())
}

#[test]
fn integer_inputs_become_f32_with_a_note() -> Res {
    let d = dirs();
    let s = [4usize, 3];
    let xi: Vec<i64> = vec![1, -2, 3, 4, 0, 6, -7, 8, 9, 10, 11, -12];
    let yu: Vec<u8> = vec![3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8];
    let xb: Vec<u8> = xi.iter().flat_map(|v| v.to_le_bytes()).collect();
    let a = write_file(d.inp.path(), "a.npy", &npy_bytes("<i8", false, &s, &xb));
    let b = write_file(d.inp.path(), "b.npy", &npy_bytes("|u1", false, &s, &yu));
    let out = d.out.path().join("s.npy");
    let o = cosim()
        .args(["--device", "cpu", "along"])
        .args([&a, &b])
        .args(["--dim", "1", "-o"])
        .arg(&out)
        .output()?;
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("a.npy holds int64") && err.contains("b.npy holds uint8"),
        "{err}"
    );
    let (xf, yf): (Vec<f32>, Vec<f32>) = (
        xi.iter().map(|&v| v as f32).collect(),
        yu.iter().map(|&v| v as f32).collect(),
    );
    let want = cpu::cosine_similarity(&xf, &s, &yf, &s, 1, None)?;
    let got = read_npy(&out);
    assert_eq!((got.descr.as_str(), got.shape.clone()), ("<f4", vec![4]));
    assert_close(&got.values, &widen(&want.values), 0.0, "ints");
    Ok(())
}

#[test]
fn integers_with_f16_compute_in_f16() -> Res {
    // PyTorch: int64 with float16 gives float16.
    let d = dirs();
    let s = [2usize, 2];
    let xi: Vec<u8> = [1i32, -2, 3, 4]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let y = [f16::from_f32(0.5), f16::ONE, f16::from_f32(-2.0), f16::ONE];
    let yb: Vec<u8> = y.iter().flat_map(|h| h.to_le_bytes()).collect();
    let a = write_file(d.inp.path(), "a.npy", &npy_bytes("<i4", false, &s, &xi));
    let b = write_file(d.inp.path(), "b.npy", &npy_bytes("<f2", false, &s, &yb));
    let out = d.out.path().join("s.npy");
    cosim()
        .args(["-q", "--device", "cpu", "along"])
        .args([&a, &b])
        .args(["--dim", "1", "-o"])
        .arg(&out)
        .assert()
        .success();
    let xh: Vec<f16> = [1.0f32, -2., 3., 4.]
        .iter()
        .map(|&v| f16::from_f32(v))
        .collect();
    let want = cpu::cosine_similarity(&xh, &s, &y, &s, 1, None)?;
    let got = read_npy(&out);
    assert_eq!(got.descr, "<f2");
    assert_close(&got.values, &widen(&want.values), 0.0, "int with f16");
    Ok(())
}

#[test]
fn mixed_f16_and_f32_promote_to_f32() -> Res {
    let d = dirs();
    let s = [2usize, 2];
    let x = [
        f16::from_f32(1.0),
        f16::from_f32(2.0),
        f16::from_f32(-3.0),
        f16::ONE,
    ];
    let xb: Vec<u8> = x.iter().flat_map(|h| h.to_le_bytes()).collect();
    let y = [0.5f32, 0.25, 1.0, -1.0];
    let a = write_file(d.inp.path(), "a.npy", &npy_bytes("<f2", false, &s, &xb));
    let b = write_f32(d.inp.path(), "b.npy", &s, &y);
    let out = d.out.path().join("s.npy");
    cosim()
        .args(["-q", "--device", "cpu", "along"])
        .args([&a, &b])
        .args(["--dim", "1", "-o"])
        .arg(&out)
        .assert()
        .success();
    let xf: Vec<f32> = x.iter().map(|h| h.to_f32()).collect();
    let want = cpu::cosine_similarity(&xf, &s, &y, &s, 1, None)?;
    let got = read_npy(&out);
    assert_eq!(got.descr, "<f4");
    assert_close(&got.values, &widen(&want.values), 0.0, "promotion");
    Ok(())
}

#[test]
fn large_inputs_are_memory_mapped_and_give_the_same_values() -> Res {
    // 1.25 MiB per file: over the memory-map threshold, read in place.
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(7);
    let s = [8usize, 64, 640];
    let n = s.iter().product();
    let (x, y) = (random(&mut rng, n), random(&mut rng, n));
    let a = write_f32(d.inp.path(), "a.npy", &s, &x);
    let b = write_f32(d.inp.path(), "b.npy", &s, &y);
    let out = d.out.path().join("s.npy");
    cosim()
        .args(["-q", "--device", "cpu", "along"])
        .args([&a, &b])
        .args(["--dim", "1", "-o"])
        .arg(&out)
        .assert()
        .success();
    let want = cpu::cosine_similarity(&x, &s, &y, &s, 1, None)?;
    let got = read_npy(&out);
    assert_eq!(got.shape, vec![8, 640]);
    assert_close(&got.values, &widen(&want.values), 0.0, "mapped");
    Ok(())
}

#[test]
fn channels_and_reweight_match_the_library() -> Res {
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(8);
    let s = [2usize, 3, 4, 5];
    let (x, y) = (random(&mut rng, 120), random(&mut rng, 120));
    let a = write_f32(d.inp.path(), "a.npy", &s, &x);
    let b = write_f32(d.inp.path(), "b.npy", &s, &y);
    let out = d.out.path().join("sim.npy");
    cosim()
        .args(["-q", "--device", "cpu", "channels"])
        .args([&a, &b])
        .args(["--flatten-from", "2", "-o"])
        .arg(&out)
        .assert()
        .success();
    let want = cpu::channel_similarity(&x, &s, &y, &s, 2, None)?;
    let got = read_npy(&out);
    assert_eq!(got.shape, vec![2, 3]);
    assert_close(&got.values, &widen(&want.values), 0.0, "channels");

    let (out2, w) = (d.out.path().join("sim2.npy"), d.out.path().join("w.npy"));
    cosim()
        .args(["-q", "--device", "cpu", "channels"])
        .args([&a, &b])
        .args(["--flatten-from", "2", "-o"])
        .arg(&out2)
        .arg("--reweight")
        .arg(&w)
        .assert()
        .success();
    let want = cpu::reweight_channels(&x, &s, &y, &s, 2, None)?;
    let (gs, gw) = (read_npy(&out2), read_npy(&w));
    assert_eq!(
        (gs.shape.clone(), gw.shape.clone()),
        (vec![2, 3], s.to_vec())
    );
    assert_close(&gs.values, &widen(&want.similarity), 0.0, "reweight sims");
    assert_close(&gw.values, &widen(&want.weighted), 0.0, "weighted");
    assert_eq!(files_in(d.out.path()), vec!["sim.npy", "sim2.npy", "w.npy"]);
    Ok(())
}

#[test]
fn input_errors_name_the_file_exit_2_and_leave_nothing() -> Res {
    let d = dirs();
    let good = write_f32(d.inp.path(), "good.npy", &[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let other = write_f32(d.inp.path(), "other.npy", &[4, 3], &[1.; 12]);
    let garbage = write_file(
        d.inp.path(),
        "garbage.npy",
        b"this is not a numpy file at all",
    );
    let truncated = write_file(
        d.inp.path(),
        "truncated.npy",
        &npy_bytes("<f4", false, &[2, 3], &f32_bytes(&[1., 2., 3.])),
    );
    let complex = write_file(
        d.inp.path(),
        "complex.npy",
        &npy_bytes("<c8", false, &[2], &[0u8; 16]),
    );
    let mut broken = npy_bytes("<f4", false, &[2, 3], &f32_bytes(&[0.; 6]));
    broken[20..26].copy_from_slice(b"#####("); // the header dict no longer parses
    let broken = write_file(d.inp.path(), "broken.npy", &broken);
    let missing = d.inp.path().join("missing.npy");
    let out = d.out.path().join("s.npy");
    let along = |a: &Path, b: &Path, dim: &str| {
        let mut c = cosim();
        c.args(["--device", "cpu", "along"])
            .args([a, b])
            .args(["--dim", dim, "-o"])
            .arg(&out);
        c
    };
    let o = d.out.path();
    assert_fails(
        &mut along(&missing, &good, "1"),
        2,
        &["missing.npy", "cannot open"],
        o,
    );
    assert_fails(
        &mut along(&good, &garbage, "1"),
        2,
        &["garbage.npy", "not a valid .npy"],
        o,
    );
    assert_fails(
        &mut along(&truncated, &good, "1"),
        2,
        &["truncated.npy", "truncated"],
        o,
    );
    assert_fails(
        &mut along(&good, &broken, "1"),
        2,
        &["broken.npy", "not a valid .npy"],
        o,
    );
    assert_fails(
        &mut along(&good, &complex, "1"),
        2,
        &["complex.npy", "unsupported dtype"],
        o,
    );
    assert_fails(
        &mut along(&good, &other, "1"),
        2,
        &["good.npy", "other.npy", "do not broadcast"],
        o,
    );
    assert_fails(&mut along(&good, &good, "2"), 2, &["good.npy", "dim 2"], o);
    assert_fails(
        along(&good, &good, "1").args(["--eps", "-1"]),
        2,
        &["good.npy", "eps"],
        o,
    );
    assert_fails(
        cosim()
            .args(["channels"])
            .args([&good, &good])
            .args(["--flatten-from", "5", "-o"])
            .arg(&out),
        2,
        &["good.npy", "flatten_from 5"],
        o,
    );
    assert_fails(
        cosim()
            .args(["channels"])
            .args([&good, &good])
            .args(["--flatten-from", "1", "-o"])
            .arg(&out)
            .arg("--reweight")
            .arg(&out),
        2,
        &["s.npy", "--reweight"],
        o,
    );
    Ok(())
}

#[test]
fn output_errors_exit_2_and_leave_nothing() -> Res {
    let d = dirs();
    let good = write_f32(d.inp.path(), "good.npy", &[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let run = |out: &Path| {
        let mut c = cosim();
        c.args(["--device", "cpu", "along"])
            .args([&good, &good])
            .args(["--dim", "1", "-o"])
            .arg(out);
        c
    };
    // A directory that does not exist.
    let nowhere = d.out.path().join("no/such/dir/s.npy");
    assert_fails(
        &mut run(&nowhere),
        2,
        &["s.npy", "cannot write in"],
        d.out.path(),
    );
    // A directory we may not write to (not testable as root, who may write anywhere).
    let locked = d.out.path().join("locked");
    std::fs::create_dir(&locked)?;
    set_mode(&locked, 0o555);
    if std::fs::write(locked.join("probe"), b"").is_err() {
        assert_fails(
            &mut run(&locked.join("s.npy")),
            2,
            &["s.npy", "cannot write in"],
            &locked,
        );
    }
    set_mode(&locked, 0o755);
    std::fs::remove_dir_all(&locked)?;
    // An existing output: refused without --force and left as it was; replaced with it.
    let existing = d.out.path().join("s.npy");
    std::fs::write(&existing, b"keep me")?;
    let o = run(&existing).output()?;
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("s.npy") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&existing)?, b"keep me");
    assert_eq!(files_in(d.out.path()), vec!["s.npy"]);
    run(&existing).arg("--force").assert().success();
    assert_eq!(read_npy(&existing).shape, vec![2]);
    assert_eq!(files_in(d.out.path()), vec!["s.npy"]);
    // The second output of `channels --reweight` exists: nothing is written, not even -o.
    let o = cosim()
        .args(["--device", "cpu", "channels"])
        .args([&good, &good])
        .args(["--flatten-from", "1", "-o"])
        .arg(d.out.path().join("sim.npy"))
        .arg("--reweight")
        .arg(&existing)
        .output()?;
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("s.npy: already exists"));
    assert_eq!(files_in(d.out.path()), vec!["s.npy"]);
    // The output is a directory.
    let sub = d.out.path().join("sub");
    std::fs::create_dir(&sub)?;
    let o = run(&sub).output()?;
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"));
    Ok(())
}

#[cfg(unix)]
fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) {}

#[test]
fn usage_errors_exit_2() {
    cosim().args(["--device", "gpu", "info"]).assert().code(2);
    cosim()
        .args(["along", "a.npy", "b.npy", "-o", "x.npy"])
        .assert()
        .code(2); // no --dim
    cosim().args(["frobnicate"]).assert().code(2);
    cosim().assert().code(2);
}

#[test]
fn every_help_succeeds_and_teaches() {
    // Each --help shows its command's long description (a phrase from it) and examples.
    for (sub, phrase) in [
        (&[][..], "Exit codes"),
        (
            &["along"],
            "torch.nn.functional.cosine_similarity(a, b, dim, eps)",
        ),
        (&["channels"], "--flatten-from 2 gives [N, C]"),
        (&["pairwise"], "greedy"),
        (&["demo"], "forum thread"),
        (&["info"], "compute capability"),
        (&["bench"], "effective bandwidth"),
    ] {
        let o = cosim().args(sub).arg("--help").output().unwrap();
        assert!(o.status.success(), "{sub:?} --help");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("Example"),
            "{sub:?} --help has examples:\n{text}"
        );
        assert!(
            text.contains(phrase),
            "{sub:?} --help shows its long description ({phrase:?}):\n{text}"
        );
    }
}

#[test]
fn demo_answers_every_question_on_the_cpu() {
    let o = cosim().args(["--device", "cpu", "demo"]).output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for q in ["Q1.", "Q2.", "Q3.", "Q4.", "Q5.", "Q6."] {
        assert!(text.contains(q), "{q} missing:\n{text}");
    }
    assert!(text.contains("shape [1, 20, 20]"));
    assert!(text.contains("zero vector in f16 → 0;"));
}

#[test]
fn info_reports_kernels_and_devices() {
    let o = cosim().arg("info").output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("--device auto: "), "{text}");
    #[cfg(feature = "cuda")]
    assert!(text.contains("CUDA kernels: "), "{text}");
}

#[test]
fn blocked_runs_give_exactly_the_whole_result() -> Res {
    // --block-bytes forces the job into blocks of rows along dim 0 (as when a job does not
    // fit in the GPU's memory); every block shape must give the bits of the whole job.
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(9);
    let s = [7usize, 3, 4, 5];
    let (x, y, p) = (
        random(&mut rng, 420),
        random(&mut rng, 420),
        random(&mut rng, 3),
    );
    let a = write_f32(d.inp.path(), "a.npy", &s, &x);
    let b = write_f32(d.inp.path(), "b.npy", &s, &y);
    let proto = write_f32(d.inp.path(), "p.npy", &[1, 3, 1, 1], &p);
    let run = |args: &[&str], inputs: [&Path; 2], outs: &[&Path]| {
        let mut c = cosim();
        c.args(["-q", "--device", "cpu", "--force"]).args(args);
        c.args(inputs);
        for (i, o) in outs.iter().enumerate() {
            c.arg(if i == 0 { "-o" } else { "--reweight" }).arg(o);
        }
        c.assert().success();
    };
    let (whole, blocked) = (d.out.path().join("whole.npy"), d.out.path().join("blk.npy"));
    let (ww, wb) = (d.out.path().join("ww.npy"), d.out.path().join("wb.npy"));
    for bytes in ["800", "1700", "100000"] {
        let cut = ["--block-bytes", bytes];
        // Along dim 1, both inputs cut; then against a prototype that goes whole.
        for (second, dim) in [(&b, "1"), (&proto, "1"), (&b, "-1")] {
            let args = ["along", "--dim", dim];
            run(&args, [&a, second], &[&whole]);
            run(&[&cut[..], &args].concat(), [&a, second], &[&blocked]);
            assert_eq!(
                read_npy(&blocked).values,
                read_npy(&whole).values,
                "{bytes} {dim}"
            );
        }
        let args = ["channels", "--flatten-from", "2"];
        run(&args, [&a, &b], &[&whole, &ww]);
        run(&[&cut[..], &args].concat(), [&a, &b], &[&blocked, &wb]);
        assert_eq!(read_npy(&blocked).values, read_npy(&whole).values);
        assert_eq!(read_npy(&wb).values, read_npy(&ww).values);
        let want = cpu::reweight_channels(&x, &s, &y, &s, 2, None)?;
        assert_close(
            &read_npy(&wb).values,
            &widen(&want.weighted),
            0.0,
            "weighted",
        );
    }
    // A budget below one row is refused (runtime error), leaving no file.
    let empty = TempDir::new()?;
    assert_fails(
        cosim()
            .args(["--device", "cpu", "--block-bytes", "1", "along"])
            .args([&a, &b])
            .args(["--dim", "1", "-o"])
            .arg(empty.path().join("none.npy")),
        1,
        &["a.npy", "one row"],
        empty.path(),
    );
    Ok(())
}

// ---- cosim pairwise ----

/// Reads every entry of an `.npz` (a zip of `.npy` files) written by the binary, by name
/// without the `.npy` suffix, checking that entries are stored uncompressed.
fn read_npz(path: &Path) -> std::collections::BTreeMap<String, Npy> {
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
fn pairwise(a: &Path, b: &Path, args: &[&str], out: Option<&Path>) -> String {
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
fn stdout_values(text: &str, label: &str) -> Vec<f64> {
    text.lines()
        .map(|l| {
            let i = l.find(&format!("{label} ")).expect("label on each line") + label.len() + 1;
            let v: f32 = l[i..].split(' ').next().unwrap().parse().unwrap();
            v as f64
        })
        .collect()
}

/// Random sets: (A's shape, A's layout, B's shape, B's layout) and the CLI flags for them.
struct PairCase {
    a: Vec<usize>,
    la: Layout,
    b: Vec<usize>,
    lb: Layout,
}

use cosim::pairwise::{Layout, PairPlan};

fn layout_flags(c: &PairCase) -> Vec<&'static str> {
    let name = |l| match l {
        Layout::Rows => "rows",
        Layout::Cols => "cols",
    };
    vec!["--layout-a", name(c.la), "--layout-b", name(c.lb)]
}

fn pair_cases() -> Vec<PairCase> {
    use Layout::{Cols, Rows};
    let c = |a: &[usize], la, b: &[usize], lb| PairCase {
        a: a.to_vec(),
        la,
        b: b.to_vec(),
        lb,
    };
    vec![
        c(&[5, 6], Rows, &[7, 6], Rows),
        c(&[6, 5], Cols, &[6, 7], Cols),
        c(&[5, 6], Rows, &[6, 7], Cols),
        // Batched A, shared B; shared A, batched B; both batched.
        c(&[3, 5, 6], Rows, &[7, 6], Rows),
        c(&[6, 5], Cols, &[3, 7, 6], Rows),
        c(&[2, 6, 5], Cols, &[2, 6, 7], Cols),
    ]
}

#[test]
fn pairwise_matrix_matches_the_library_in_every_layout() -> Res {
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(20);
    let out = d.out.path().join("s.npy");
    for (i, c) in pair_cases().iter().enumerate() {
        let x = random(&mut rng, c.a.iter().product());
        let y = random(&mut rng, c.b.iter().product());
        let a = write_f32(d.inp.path(), "a.npy", &c.a, &x);
        let b = write_f32(d.inp.path(), "b.npy", &c.b, &y);
        let flags = layout_flags(c);
        let _ = std::fs::remove_file(&out);
        pairwise(&a, &b, &flags, Some(&out));
        let plan = PairPlan::new(&c.a, c.la, &c.b, c.lb)?;
        let want = cpu::pairwise_similarity(&plan, &x, &y)?;
        let got = read_npy(&out);
        assert_eq!(got.descr, "<f4");
        assert_eq!(got.shape, want.shape, "case {i}");
        assert_close(&got.values, &widen(&want.values), 0.0, &format!("case {i}"));
    }
    // --layout sets both sets; the message names the shape written.
    let x = random(&mut rng, 30);
    let a = write_f32(d.inp.path(), "a.npy", &[6, 5], &x);
    let o = cosim()
        .args(["--device", "cpu", "--force", "pairwise"])
        .args([&a, &a])
        .args(["--layout", "cols", "-o"])
        .arg(&out)
        .output()?;
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("s.npy: float32 [5, 5]"), "{err}");
    let plan = PairPlan::new(&[6, 5], Layout::Cols, &[6, 5], Layout::Cols)?;
    let want = cpu::pairwise_similarity(&plan, &x, &x)?;
    assert_close(&read_npy(&out).values, &widen(&want.values), 0.0, "cols");
    assert_eq!(files_in(d.out.path()), vec!["s.npy"]);
    Ok(())
}

#[test]
fn pairwise_streamed_matrix_equals_the_whole_one_bit_for_bit() -> Res {
    // Budgets far below the matrix: one row per block (and less than a row: still one), a
    // few rows per block (the last one short), and suffixed sizes.
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(21);
    let (sa, sb) = ([3usize, 9, 8], [11usize, 8]);
    let (x, y) = (random(&mut rng, 216), random(&mut rng, 88));
    let a = write_f32(d.inp.path(), "a.npy", &sa, &x);
    let b = write_f32(d.inp.path(), "b.npy", &sb, &y);
    let plan = PairPlan::new(&sa, Layout::Rows, &sb, Layout::Rows)?;
    let want = widen(&cpu::pairwise_similarity(&plan, &x, &y)?.values);
    for budget in ["1", "44", "50", "132", "1K", "1m"] {
        let out = d.out.path().join(format!("s{budget}.npy"));
        pairwise(&a, &b, &["--budget", budget], Some(&out));
        let got = read_npy(&out);
        assert_eq!(got.shape, vec![3, 9, 11]);
        assert_eq!(got.values, want, "--budget {budget}");
    }
    // --fast (tensor cores on a GPU) computes exactly on the CPU: the same bits.
    let out = d.out.path().join("fast.npy");
    pairwise(&a, &b, &["--fast", "--budget", "44"], Some(&out));
    assert_eq!(read_npy(&out).values, want, "--fast on the CPU");
    // f16 in, f16 out, streamed.
    let (xh, yh): (Vec<f16>, Vec<f16>) = (
        x.iter().map(|&v| f16::from_f32(v)).collect(),
        y.iter().map(|&v| f16::from_f32(v)).collect(),
    );
    let bits = |v: &[f16]| -> Vec<u8> { v.iter().flat_map(|h| h.to_le_bytes()).collect() };
    let ah = write_file(
        d.inp.path(),
        "ah.npy",
        &npy_bytes("<f2", false, &sa, &bits(&xh)),
    );
    let bh = write_file(
        d.inp.path(),
        "bh.npy",
        &npy_bytes("<f2", false, &sb, &bits(&yh)),
    );
    let out = d.out.path().join("sh.npy");
    pairwise(&ah, &bh, &["--budget", "50"], Some(&out));
    let got = read_npy(&out);
    assert_eq!(got.descr, "<f2");
    assert_eq!(
        got.values,
        widen(&cpu::pairwise_similarity(&plan, &xh, &yh)?.values)
    );
    // f64 streams too.
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    let a64 = write_file(
        d.inp.path(),
        "a64.npy",
        &npy_bytes("<f8", false, &sa, &f64_bytes(&x64)),
    );
    let b64 = write_file(
        d.inp.path(),
        "b64.npy",
        &npy_bytes("<f8", false, &sb, &f64_bytes(&y64)),
    );
    let out = d.out.path().join("s64.npy");
    pairwise(&a64, &b64, &["--budget", "100"], Some(&out));
    let got = read_npy(&out);
    assert_eq!(got.descr, "<f8");
    let want64 = cpu::pairwise_similarity(&plan, &x64, &y64)?;
    assert_eq!(got.values, widen(&want64.values));
    // A budget that is not a byte count is a usage error.
    let o = cosim()
        .args(["pairwise"])
        .args([&a, &b])
        .args(["--budget", "lots", "-o"])
        .arg(d.out.path().join("x.npy"))
        .output()?;
    assert_eq!(o.status.code(), Some(2));
    Ok(())
}

fn f64_bytes(v: &[f64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn pairwise_top_k_argmax_and_means_match_the_library() -> Res {
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(22);
    for (i, c) in pair_cases().iter().enumerate() {
        let x = random(&mut rng, c.a.iter().product());
        let y = random(&mut rng, c.b.iter().product());
        let a = write_f32(d.inp.path(), "a.npy", &c.a, &x);
        let b = write_f32(d.inp.path(), "b.npy", &c.b, &y);
        let plan = PairPlan::new(&c.a, c.la, &c.b, c.lb)?;
        let flags = layout_flags(c);
        let o = d.out.path().join(format!("{i}"));
        std::fs::create_dir(&o)?;

        let top = o.join("top.npz");
        pairwise(
            &a,
            &b,
            &[&flags[..], &["--top-k", "3"]].concat(),
            Some(&top),
        );
        let want = cpu::pairwise_top_k(&plan, &x, &y, 3)?;
        let got = read_npz(&top);
        assert_eq!(got.keys().collect::<Vec<_>>(), ["indices", "values"]);
        assert_eq!(
            (got["values"].descr.as_str(), got["indices"].descr.as_str()),
            ("<f4", "<i8")
        );
        assert_eq!(got["values"].shape, want.shape, "case {i}");
        assert_eq!(got["indices"].shape, want.shape, "case {i}");
        assert_eq!(got["values"].values, widen(&want.values), "case {i}");
        let idx: Vec<f64> = want.indices.iter().map(|&j| j as f64).collect();
        assert_eq!(got["indices"].values, idx, "case {i}");

        let arg = o.join("arg.npz");
        pairwise(&a, &b, &[&flags[..], &["--argmax"]].concat(), Some(&arg));
        let want = cpu::pairwise_argmax(&plan, &x, &y)?;
        let got = read_npz(&arg);
        assert_eq!(got["values"].shape, plan.row_shape());
        assert_eq!(got["values"].values, widen(&want.values));
        let idx: Vec<f64> = want.indices.iter().map(|&j| j as f64).collect();
        assert_eq!(got["indices"].values, idx);

        let rm = o.join("rm.npy");
        pairwise(&a, &b, &[&flags[..], &["--row-mean"]].concat(), Some(&rm));
        let want = cpu::pairwise_row_mean(&plan, &x, &y)?;
        let got = read_npy(&rm);
        assert_eq!(got.shape, want.shape);
        assert_eq!(got.values, widen(&want.values));

        // --mean prints one line per batch, and -o saves the same values.
        let mean = o.join("mean.npy");
        let text = pairwise(&a, &b, &[&flags[..], &["--mean"]].concat(), Some(&mean));
        let want = cpu::pairwise_mean(&plan, &x, &y)?;
        let got = read_npy(&mean);
        assert_eq!(got.shape, want.shape);
        assert_eq!(got.values, widen(&want.values));
        assert_eq!(stdout_values(&text, "mean"), widen(&want.values), "{text}");
        assert_eq!(text.starts_with("batch 0: "), plan.batched, "{text}");
        let text_only = pairwise(&a, &b, &[&flags[..], &["--mean"]].concat(), None);
        assert_eq!(text_only, text);
    }
    Ok(())
}

#[test]
fn pairwise_greedy_matches_the_library_with_and_without_weights() -> Res {
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(23);
    let (sa, sb) = ([4usize, 5, 6], [7usize, 6]);
    let (x, y) = (random(&mut rng, 120), random(&mut rng, 42));
    let a = write_f32(d.inp.path(), "a.npy", &sa, &x);
    let b = write_f32(d.inp.path(), "b.npy", &sb, &y);
    let plan = PairPlan::new(&sa, Layout::Rows, &sb, Layout::Rows)?;
    let check = |text: &str, want: &cosim::pairwise::SetScores<Vec<f32>>| {
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.starts_with("batch 0: precision "), "{text}");
        assert_eq!(stdout_values(text, "precision"), widen(&want.precision));
        assert_eq!(stdout_values(text, "recall"), widen(&want.recall));
        assert_eq!(stdout_values(text, "f1"), widen(&want.f1));
    };
    let want = cpu::set_similarity(&plan, &x, &y, None, None)?;
    check(&pairwise(&a, &b, &["--greedy"], None), &want);
    let out = d.out.path().join("g.npz");
    check(&pairwise(&a, &b, &["--greedy"], Some(&out)), &want);
    let got = read_npz(&out);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["f1", "precision", "recall"]
    );
    assert_eq!(got["precision"].shape, vec![4]);
    assert_eq!(got["precision"].values, widen(&want.precision));
    assert_eq!(got["recall"].values, widen(&want.recall));
    assert_eq!(got["f1"].values, widen(&want.f1));

    // Weights: a's are [4, 5] (one per vector of every batch), b's [7] (shared set).
    let wa: Vec<f32> = (0..20).map(|i| 0.5 + (i % 3) as f32).collect();
    let wb: Vec<f32> = (0..7).map(|i| 1.0 + i as f32).collect();
    let pa = write_f32(d.inp.path(), "wa.npy", &[4, 5], &wa);
    let pb = write_f32(d.inp.path(), "wb.npy", &[7], &wb);
    let want = cpu::set_similarity(&plan, &x, &y, Some(&wa), Some(&wb))?;
    let wa_s = pa.to_str().unwrap();
    let wb_s = pb.to_str().unwrap();
    let text = pairwise(
        &a,
        &b,
        &["--greedy", "--weights-a", wa_s, "--weights-b", wb_s],
        None,
    );
    check(&text, &want);
    let want_a = cpu::set_similarity(&plan, &x, &y, Some(&wa), None)?;
    check(
        &pairwise(&a, &b, &["--greedy", "--weights-a", wa_s], None),
        &want_a,
    );

    // The seed's question: one number for two sets, without a batch dim.
    let flat = [20usize, 6];
    let a2 = write_f32(d.inp.path(), "a2.npy", &flat, &x);
    let text = pairwise(&a2, &a2, &["--greedy"], None);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.starts_with("precision "), "{text}");
    for v in stdout_values(&text, "f1") {
        assert!((v - 1.0).abs() < 1e-6, "{text}");
    }
    Ok(())
}

#[test]
fn pairwise_help_teaches_the_semantics_and_the_modes() {
    let o = cosim().args(["pairwise", "--help"]).output().unwrap();
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for s in [
        "S[i, j] = cos(a_i, b_j)",
        "--layout cols",
        "--top-k K -o F.npz",
        "precision = ",
        "200, 52, 784",
        "--budget",
        "--fast",
        "Examples:",
    ] {
        assert!(
            text.contains(s),
            "pairwise --help should mention {s:?}:\n{text}"
        );
    }
}

#[test]
fn pairwise_errors_name_the_file_exit_2_and_leave_nothing() -> Res {
    let d = dirs();
    let o = d.out.path();
    let good = write_f32(d.inp.path(), "good.npy", &[3, 4], &[1.0; 12]);
    let other_d = write_f32(d.inp.path(), "five.npy", &[3, 5], &[1.0; 15]);
    let rank1 = write_f32(d.inp.path(), "flat.npy", &[4], &[1.0; 4]);
    let batch2 = write_f32(d.inp.path(), "b2.npy", &[2, 3, 4], &[1.0; 24]);
    let batch3 = write_f32(d.inp.path(), "b3.npy", &[3, 3, 4], &[1.0; 36]);
    let empty = write_f32(d.inp.path(), "empty.npy", &[0, 4], &[]);
    let w_bad = write_f32(d.inp.path(), "w.npy", &[2], &[1.0; 2]);
    let out = o.join("s.npy");
    let run = |a: &Path, b: &Path, args: &[&str]| {
        let mut c = cosim();
        c.args(["--device", "cpu", "pairwise"])
            .args([a, b])
            .args(args);
        c
    };
    let out_s = out.to_str().unwrap();
    let npz = o.join("t.npz");
    let npz_s = npz.to_str().unwrap();
    assert_fails(
        &mut run(&rank1, &good, &["-o", out_s]),
        2,
        &["flat.npy", "[N, D]"],
        o,
    );
    assert_fails(
        &mut run(&good, &rank1, &["--layout-b", "cols", "-o", out_s]),
        2,
        &["flat.npy", "[D, N]"],
        o,
    );
    assert_fails(
        &mut run(&good, &other_d, &["-o", out_s]),
        2,
        &["good.npy", "five.npy", "vector lengths"],
        o,
    );
    assert_fails(
        &mut run(&batch2, &batch3, &["--mean"]),
        2,
        &["b2.npy", "b3.npy", "batch sizes"],
        o,
    );
    assert_fails(
        &mut run(&good, &empty, &["-o", out_s]),
        2,
        &["empty.npy", "no vectors"],
        o,
    );
    assert_fails(
        &mut run(&good, &good, &["--top-k", "4", "-o", npz_s]),
        2,
        &["--top-k 4", "good.npy", "<= 3"],
        o,
    );
    assert_fails(
        &mut run(&good, &good, &["--top-k", "0", "-o", npz_s]),
        2,
        &["--top-k 0", "good.npy"],
        o,
    );
    assert_fails(
        &mut run(
            &good,
            &good,
            &["--greedy", "--weights-a", w_bad.to_str().unwrap()],
        ),
        2,
        &["--weights-a", "w.npy", "good.npy", "3 vectors"],
        o,
    );
    assert_fails(
        &mut run(
            &batch2,
            &good,
            &[
                "--greedy",
                "--weights-b",
                w_bad.to_str().unwrap(),
                "-o",
                npz_s,
            ],
        ),
        2,
        &["--weights-b", "w.npy", "3 vectors"],
        o,
    );
    assert_fails(
        &mut run(&good, &good, &["--eps", "-1", "-o", out_s]),
        2,
        &["good.npy", "eps"],
        o,
    );
    assert_fails(
        &mut run(&d.inp.path().join("missing.npy"), &good, &["--mean"]),
        2,
        &["missing.npy"],
        o,
    );
    // Usage errors from clap: no mode, two modes, a mode without -o, --budget with a mode,
    // weights without --greedy.
    for args in [
        &[][..],
        &["--mean", "--greedy"],
        &["--top-k", "2"],
        &["--argmax"],
        &["--row-mean"],
        &["--top-k", "2", "--budget", "1K", "-o", npz_s],
        &["--mean", "--weights-a", "w.npy"],
    ] {
        let r = run(&good, &good, args).output()?;
        assert_eq!(r.status.code(), Some(2), "{args:?}");
        assert_eq!(files_in(o), Vec::<String>::new());
    }
    // An existing output is refused (and kept) without --force, replaced with it.
    std::fs::write(&out, b"keep me")?;
    let r = run(&good, &good, &["-o", out_s]).output()?;
    assert_eq!(r.status.code(), Some(2));
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("s.npy: already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read(&out)?, b"keep me");
    let r = run(&good, &good, &["--mean", "-o", out_s]).output()?;
    assert_eq!(r.status.code(), Some(2));
    assert!(
        r.stdout.is_empty(),
        "nothing printed when the output is refused"
    );
    run(&good, &good, &["-o", out_s, "--force"])
        .assert()
        .success();
    assert_eq!(read_npy(&out).shape, vec![3, 3]);
    assert_eq!(files_in(o), vec!["s.npy"]);
    Ok(())
}

/// `cosim pairwise` with the hidden `--block-bytes` forcing the sets into chunks (as when
/// they do not fit in the GPU's memory), and without; returns both stdouts.
fn pairwise_both(a: &Path, b: &Path, args: &[&str], out: &Path, bytes: &str) -> [String; 2] {
    let whole = out.with_extension("whole");
    let cut = out.with_extension("cut");
    let w = pairwise(a, b, args, Some(&whole));
    let c = pairwise(
        a,
        b,
        &[args, &["--block-bytes", bytes]].concat(),
        Some(&cut),
    );
    [w, c]
}

#[test]
fn pairwise_chunked_sets_give_the_whole_result() -> Res {
    // D = 6 in f32: a vector is 24 bytes. 1 byte: one vector per chunk; 48: two (chunks
    // smaller than k = 3, and a short last chunk of 5 and 7 vectors); 72: three.
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(24);
    for (i, c) in pair_cases().iter().enumerate() {
        let x = random(&mut rng, c.a.iter().product());
        let y = random(&mut rng, c.b.iter().product());
        let a = write_f32(d.inp.path(), "a.npy", &c.a, &x);
        let b = write_f32(d.inp.path(), "b.npy", &c.b, &y);
        let plan = PairPlan::new(&c.a, c.la, &c.b, c.lb)?;
        let flags = layout_flags(c);
        for bytes in ["1", "48", "72"] {
            let o = d.out.path().join(format!("{i}-{bytes}"));
            std::fs::create_dir(&o)?;
            let what = format!("case {i}, --block-bytes {bytes}");
            let both = |mode: &[&str], name: &str| {
                let out = o.join(name);
                let text = pairwise_both(&a, &b, &[&flags[..], mode].concat(), &out, bytes);
                (text, out.with_extension("whole"), out.with_extension("cut"))
            };

            // The matrix, bit for bit (and with a --budget smaller than a chunk of rows).
            for budget in ["256M", "30"] {
                let (_, w, c) = both(&["--budget", budget], &format!("s{budget}"));
                let (w, c) = (read_npy(&w), read_npy(&c));
                assert_eq!(w.shape, plan.matrix_shape(), "{what}");
                assert_eq!(c.shape, w.shape, "{what}");
                assert_eq!(c.values, w.values, "{what} --budget {budget}");
            }

            // Top-k (k larger than a chunk; k = M) and argmax: values and indices exactly.
            for k in ["3", "7"] {
                let (_, w, c) = both(&["--top-k", k], &format!("top{k}"));
                let (w, c) = (read_npz(&w), read_npz(&c));
                assert_eq!(c["values"].shape, plan.top_k_shape(k.parse()?), "{what}");
                assert_eq!(c["values"].values, w["values"].values, "{what} top {k}");
                assert_eq!(c["indices"].values, w["indices"].values, "{what} top {k}");
            }
            let (_, w, c) = both(&["--argmax"], "arg");
            let (w, c) = (read_npz(&w), read_npz(&c));
            assert_eq!(c["values"].shape, plan.row_shape(), "{what}");
            assert_eq!(c["values"].values, w["values"].values, "{what} argmax");
            assert_eq!(c["indices"].values, w["indices"].values, "{what} argmax");

            // The means and greedy scores: the per-chunk results combined, up to rounding.
            let (_, w, c) = both(&["--row-mean"], "rm");
            let (w, c) = (read_npy(&w), read_npy(&c));
            assert_eq!(c.shape, w.shape, "{what}");
            assert_close(&c.values, &w.values, 1e-6, &format!("{what} row mean"));
            let ([tw, tc], w, c) = both(&["--mean"], "mean");
            let (w, c) = (read_npy(&w), read_npy(&c));
            assert_eq!(c.shape, w.shape, "{what}");
            assert_close(&c.values, &w.values, 1e-6, &format!("{what} mean"));
            let (sw, sc) = (stdout_values(&tw, "mean"), stdout_values(&tc, "mean"));
            assert_close(&sc, &sw, 1e-6, &format!("{what} mean printed"));
            let ([tw, tc], w, c) = both(&["--greedy"], "g");
            let (w, c) = (read_npz(&w), read_npz(&c));
            for key in ["precision", "recall", "f1"] {
                assert_eq!(c[key].shape, w[key].shape, "{what}");
                assert_close(
                    &c[key].values,
                    &w[key].values,
                    1e-6,
                    &format!("{what} {key}"),
                );
                let (sw, sc) = (stdout_values(&tw, key), stdout_values(&tc, key));
                assert_close(&sc, &sw, 1e-6, &format!("{what} {key} printed"));
            }
        }
    }
    Ok(())
}

#[test]
fn pairwise_chunked_greedy_with_weights_gives_the_whole_result() -> Res {
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(25);
    // Batched A [3, 5, 6] in rows, shared B [6, 7] in cols.
    let (sa, sb) = ([3usize, 5, 6], [6usize, 7]);
    let (x, y) = (random(&mut rng, 90), random(&mut rng, 42));
    let a = write_f32(d.inp.path(), "a.npy", &sa, &x);
    let b = write_f32(d.inp.path(), "b.npy", &sb, &y);
    let wa: Vec<f32> = (0..15).map(|i| 0.5 + (i % 4) as f32).collect();
    let wb: Vec<f32> = (0..7).map(|i| 1.0 + i as f32).collect();
    let pa = write_f32(d.inp.path(), "wa.npy", &[3, 5], &wa);
    let pb = write_f32(d.inp.path(), "wb.npy", &[7], &wb);
    let (pa, pb) = (pa.to_str().unwrap(), pb.to_str().unwrap());
    let args = [
        "--layout-b",
        "cols",
        "--greedy",
        "--weights-a",
        pa,
        "--weights-b",
        pb,
    ];
    let out = d.out.path().join("g.npz");
    let [tw, tc] = pairwise_both(&a, &b, &args, &out, "48");
    assert_eq!(tc.lines().count(), 3, "{tc}");
    let (w, c) = (
        read_npz(&out.with_extension("whole")),
        read_npz(&out.with_extension("cut")),
    );
    for key in ["precision", "recall", "f1"] {
        assert_close(&c[key].values, &w[key].values, 1e-6, key);
        assert_close(
            &stdout_values(&tc, key),
            &stdout_values(&tw, key),
            1e-6,
            key,
        );
    }
    Ok(())
}

#[test]
fn pairwise_chunked_ties_go_to_the_lower_global_index() -> Res {
    // B holds the same vector at 1, 3 and 5, in three different chunks of two vectors; A
    // holds it too. Its row's equal best values must come out as 1, 3, 5, as whole.
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(26);
    let dim = 6;
    let v = random(&mut rng, dim);
    let mut y = Vec::new();
    for j in 0..7 {
        if j % 2 == 1 {
            y.extend_from_slice(&v);
        } else {
            y.extend(random(&mut rng, dim));
        }
    }
    let mut x = random(&mut rng, 2 * dim);
    x.extend_from_slice(&v);
    let transpose = |m: &[f32], n: usize| -> Vec<f32> {
        (0..dim)
            .flat_map(|k| (0..n).map(move |i| m[i * dim + k]))
            .collect()
    };
    for layout in ["rows", "cols"] {
        let (a, b) = if layout == "rows" {
            (
                write_f32(d.inp.path(), "a.npy", &[3, dim], &x),
                write_f32(d.inp.path(), "b.npy", &[7, dim], &y),
            )
        } else {
            (
                write_f32(d.inp.path(), "a.npy", &[dim, 3], &transpose(&x, 3)),
                write_f32(d.inp.path(), "b.npy", &[dim, 7], &transpose(&y, 7)),
            )
        };
        let flags = ["--layout", layout];
        let out = d.out.path().join(format!("top-{layout}.npz"));
        pairwise_both(
            &a,
            &b,
            &[&flags[..], &["--top-k", "3"]].concat(),
            &out,
            "48",
        );
        let (w, c) = (
            read_npz(&out.with_extension("whole")),
            read_npz(&out.with_extension("cut")),
        );
        assert_eq!(&c["indices"].values[6..], &[1.0, 3.0, 5.0], "{layout}");
        assert_eq!(c["values"].values[6], c["values"].values[8], "{layout}");
        assert_eq!(c["indices"].values, w["indices"].values, "{layout}");
        assert_eq!(c["values"].values, w["values"].values, "{layout}");
        let out = d.out.path().join(format!("arg-{layout}.npz"));
        pairwise_both(&a, &b, &[&flags[..], &["--argmax"]].concat(), &out, "48");
        let c = read_npz(&out.with_extension("cut"));
        assert_eq!(c["indices"].values[2], 1.0, "{layout}");
    }
    Ok(())
}

#[test]
fn pairwise_chunked_f16_matrix_and_top_k_values_are_exact() -> Res {
    // f16 in, f16 out: 12 bytes per vector of 6, chunks of 2 vectors at --block-bytes 24.
    // Chunks are merged on f16 values while a whole run ranks on f32 sums, so among values
    // equal in f16 the indices may come in another order: each must still point at a column
    // with that very value.
    let d = dirs();
    let mut rng = SmallRng::seed_from_u64(27);
    let (sa, sb) = ([2usize, 5, 6], [2usize, 6, 7]);
    let mut half = |n| -> Vec<u8> {
        random(&mut rng, n)
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect()
    };
    let (xb, yb) = (half(60), half(84));
    let a = write_file(d.inp.path(), "a.npy", &npy_bytes("<f2", false, &sa, &xb));
    let b = write_file(d.inp.path(), "b.npy", &npy_bytes("<f2", false, &sb, &yb));
    let flags = ["--layout-b", "cols"];
    let out = d.out.path().join("s.npy");
    pairwise_both(&a, &b, &flags, &out, "24");
    let (w, c) = (
        read_npy(&out.with_extension("whole")),
        read_npy(&out.with_extension("cut")),
    );
    assert_eq!((c.descr.as_str(), &c.shape), ("<f2", &vec![2, 5, 7]));
    assert_eq!(c.values, w.values);
    let out = d.out.path().join("t.npz");
    pairwise_both(
        &a,
        &b,
        &[&flags[..], &["--top-k", "4"]].concat(),
        &out,
        "24",
    );
    let (w, c) = (
        read_npz(&out.with_extension("whole")),
        read_npz(&out.with_extension("cut")),
    );
    assert_eq!(c["values"].values, w["values"].values);
    let matrix = read_npy(&out.with_file_name("s.whole"));
    let (vals, idxs) = (&c["values"].values, &c["indices"].values);
    for (row, (v, i)) in vals.chunks(4).zip(idxs.chunks(4)).enumerate() {
        for q in 0..4 {
            assert_eq!(
                matrix.values[row * 7 + i[q] as usize],
                v[q],
                "row {row} at {q}"
            );
            assert!(!i[..q].contains(&i[q]), "row {row}: index {} twice", i[q]);
        }
    }
    Ok(())
}
