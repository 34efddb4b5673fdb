//! `cosim pairwise --shard I/N` then `cosim merge`: the merged file equals the unsharded run's
//! file byte for byte (top-k and argmax; both layouts, a batch, ties across shard borders, k
//! wider than a shard), and every refusal exits 2 with one line and leaves no file.

mod cli_support;

use cli_support::*;

/// `cosim merge -o OUT SHARDS...`, expected to succeed.
fn merge(out: &Path, shards: &[PathBuf]) {
    let o = cosim()
        .args(["-q", "merge", "-o"])
        .arg(out)
        .args(shards)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "merge: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs `args` whole and as `n` shards, merges them (in reverse order), and compares files.
fn check(a: &Path, b: &Path, args: &[&str], n: usize, dir: &Path, what: &str) {
    let whole = dir.join(format!("{what}-whole.npz"));
    pairwise(a, b, args, Some(&whole));
    let mut parts = Vec::new();
    for i in (0..n).rev() {
        let p = dir.join(format!("{what}-{i}.npz"));
        let spec = format!("{i}/{n}");
        let mut with = args.to_vec();
        with.extend(["--shard", &spec]);
        pairwise(a, b, &with, Some(&p));
        let z = read_npz(&p);
        assert_eq!(z["shard"].values, vec![i as f64, n as f64], "{what}: mark");
        parts.push(p);
    }
    let merged = dir.join(format!("{what}-merged.npz"));
    merge(&merged, &parts);
    let (m, w) = (read_npz(&merged), read_npz(&whole));
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        vec!["indices", "values"],
        "{what}"
    );
    for key in ["values", "indices"] {
        assert_eq!(m[key].shape, w[key].shape, "{what}: {key} shape");
        assert_eq!(m[key].descr, w[key].descr, "{what}: {key} dtype");
        let same = m[key]
            .values
            .iter()
            .zip(&w[key].values)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{what}: {key} differ");
    }
    assert_eq!(
        std::fs::read(&merged).unwrap(),
        std::fs::read(&whole).unwrap(),
        "{what}: the files differ"
    );
}

#[test]
fn merged_shards_are_the_whole_run_byte_for_byte() {
    let d = dirs();
    let mut r = SmallRng::seed_from_u64(51);
    let (n, m, dim) = (23, 41, 8);
    let q = random(&mut r, n * dim);
    let mut k = random(&mut r, m * dim);
    // Vector 30 is a copy of vector 3: a tie across the borders of 2, 3 and 4 shards.
    let copy: Vec<f32> = k[3 * dim..4 * dim].to_vec();
    k[30 * dim..31 * dim].copy_from_slice(&copy);
    let qa = write_f32(d.inp.path(), "q.npy", &[n, dim], &q);
    let kb = write_f32(d.inp.path(), "k.npy", &[m, dim], &k);
    // The same keys as columns, [D, M].
    let kt: Vec<f32> = (0..dim)
        .flat_map(|c| (0..m).map(move |j| (c, j)))
        .map(|(c, j)| k[j * dim + c])
        .collect();
    let kc = write_f32(d.inp.path(), "kc.npy", &[dim, m], &kt);
    let out = d.out.path();
    check(&qa, &kb, &["--top-k", "7"], 3, out, "top7");
    check(&qa, &kb, &["--top-k", "20"], 4, out, "k-wider-than-a-shard");
    check(&qa, &kb, &["--argmax"], 2, out, "argmax");
    check(
        &qa,
        &kc,
        &["--top-k", "5", "--layout-b", "cols"],
        3,
        out,
        "cols",
    );
    // A batch: [2, N, D] against [2, M, D].
    let qb = write_f32(d.inp.path(), "qb.npy", &[2, n, dim / 2], &q);
    let kbb = write_f32(d.inp.path(), "kb.npy", &[2, m, dim / 2], &k);
    check(&qb, &kbb, &["--top-k", "4"], 3, out, "batched");
}

#[test]
fn bad_shards_and_merges_are_refused_leaving_nothing() {
    let d = dirs();
    let mut r = SmallRng::seed_from_u64(52);
    let qa = write_f32(d.inp.path(), "q.npy", &[5, 4], &random(&mut r, 20));
    let kb = write_f32(d.inp.path(), "k.npy", &[3, 4], &random(&mut r, 12));
    let out = d.out.path().join("x.npz");
    let run = |extra: &[&str]| {
        let mut c = cosim();
        c.args(["--device", "cpu", "pairwise"])
            .args([&qa, &kb])
            .args(extra)
            .arg("-o")
            .arg(&out);
        c
    };
    assert_fails(
        &mut run(&["--top-k", "2", "--shard", "3/3"]),
        2,
        &["3/3"],
        d.out.path(),
    );
    assert_fails(
        &mut run(&["--top-k", "2", "--shard", "1-2"]),
        2,
        &["1-2"],
        d.out.path(),
    );
    assert_fails(
        &mut run(&["--row-mean", "--shard", "0/2"]),
        2,
        &["--shard"],
        d.out.path(),
    );
    // 5 shards of 3 vectors: shard 0 is empty.
    assert_fails(
        &mut run(&["--argmax", "--shard", "0/5"]),
        2,
        &["empty"],
        d.out.path(),
    );

    // Shards made elsewhere (the input dir), merged into the empty output dir.
    let shard = |args: &[&str], name: &str| {
        let p = d.inp.path().join(name);
        pairwise(&qa, &kb, args, Some(&p));
        p
    };
    let s0 = shard(&["--top-k", "2", "--shard", "0/2"], "s0.npz");
    let s1 = shard(&["--top-k", "2", "--shard", "1/2"], "s1.npz");
    let other_k = shard(&["--top-k", "1", "--shard", "1/2"], "k1.npz");
    let whole = shard(&["--top-k", "2"], "whole.npz");
    let fails = |shards: &[&PathBuf], names: &[&str]| {
        let mut c = cosim();
        c.args(["merge", "-o"]).arg(&out).args(shards);
        assert_fails(&mut c, 2, names, d.out.path());
    };
    fails(&[&s0], &["shard 1/2 is missing"]);
    fails(&[&s0, &s0], &["given twice"]);
    fails(&[&s0, &other_k], &["top-2 vs top-1"]);
    fails(&[&s0, &whole], &["whole.npz", "not a shard"]);
    fails(&[&kb], &["k.npy", "not an .npz"]);
    merge(&out, &[s1, s0]);
    assert_eq!(read_npz(&out)["indices"].shape, vec![5, 2]);
}
