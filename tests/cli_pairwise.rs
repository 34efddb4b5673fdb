//! End-to-end tests of `cosim pairwise`: every mode against `cosim::cpu` on the same data, in
//! every layout, streamed, chunked (forced small chunks through the same code as the GPU's
//! pipeline), and every error path.

mod cli_support;

use cli_support::*;

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

#[test]
fn ctrl_c_stops_a_chunked_job_after_its_current_pair_and_leaves_nothing() {
    let d = dirs();
    let mut r = SmallRng::seed_from_u64(91);
    // 6000 × 6000 vectors of 16 in chunks of 8: 562 500 chunk pairs, seconds of work.
    let (n, dim) = (6000, 16);
    let a = write_f32(d.inp.path(), "a.npy", &[n, dim], &random(&mut r, n * dim));
    let out = d.out.path().join("top.npz");
    let cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("cosim"))
        .args(["--device", "cpu", "--block-bytes", "512", "pairwise"])
        .args([&a, &a])
        .args(["--top-k", "3", "-o"])
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn();
    let child = cmd.expect("cosim starts");
    std::thread::sleep(std::time::Duration::from_millis(700));
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let o = child.wait_with_output().expect("cosim ends");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains("stopping after the current chunk pair"),
        "{err}"
    );
    assert!(
        err.contains("error: interrupted; no output written"),
        "{err}"
    );
    assert!(
        files_in(d.out.path()).is_empty(),
        "{:?}",
        files_in(d.out.path())
    );
}
