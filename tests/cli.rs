//! End-to-end tests of the `cosim` binary: small `.npy` files written here by a hand-built
//! writer (independent of the crate the binary reads them with), results read back by a
//! hand-built reader and compared with `cosim::cpu` on the same data; every error path is
//! checked for its exit code, a message naming the file, and no file left behind.

mod cli_support;

use cli_support::*;

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
fn device_lists_are_parsed_and_refused_clearly() -> Res {
    let d = dirs();
    let a = write_f32(d.inp.path(), "a.npy", &[2, 3], &[1., 2., 3., 4., 5., 6.]);
    let out = d.out.path().join("s.npy");
    let along = |device: &str| {
        let mut c = cosim();
        c.args(["--device", device, "along"])
            .args([&a, &a])
            .args(["--dim", "1", "-o"])
            .arg(&out);
        c
    };
    // Malformed or repeated: usage errors.
    assert_fails(
        &mut along("cuda:0,0"),
        2,
        &["names device 0 twice"],
        d.out.path(),
    );
    assert_fails(
        &mut along("cuda:0,x"),
        2,
        &["is not a device"],
        d.out.path(),
    );
    // A list for a subcommand that runs on one device: refused before any device opens.
    assert_fails(
        &mut along("cuda:0,1"),
        2,
        &["--device cuda:0,1", "only `cosim pairwise`"],
        d.out.path(),
    );
    assert_fails(
        &mut along("cuda:all"),
        2,
        &["only `cosim pairwise`"],
        d.out.path(),
    );
    if !cuda_usable() {
        // pairwise takes the list, and names the device that cannot be used.
        let mut c = cosim();
        c.args(["--device", "cuda:0,1", "pairwise"])
            .args([&a, &a])
            .arg("-o")
            .arg(&out);
        assert_fails(&mut c, 1, &["--device cuda:0"], d.out.path());
    }
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
