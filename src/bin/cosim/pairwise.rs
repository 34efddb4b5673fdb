//! `cosim pairwise`: the similarity of every vector of one set with every vector of another,
//! `S[i, j] = cos(a_i, b_j)`, and what is computed from that matrix without storing it:
//! top-k, argmax, row means, the mean, and BERTScore-style greedy matching.
//!
//! The full matrix is streamed: the `.npy` header for the whole shape is written first, then
//! each block of rows as the library hands it over ([`cosim::cpu::pairwise_similarity_blocks`]
//! or its CUDA twin, which computes each block into one reused device buffer), so neither the
//! GPU nor the host ever holds more than one block of it.
//!
//! Sets that do not fit in the GPU's memory (or any sets, on any device, when the hidden
//! `--block-bytes` forces it) are cut into chunks and run chunk pair by chunk pair, the
//! results merged on the host: see [`crate::chunks`].

use crate::dtype::{with_dtype, Compute};
use crate::error::{CliError, Result};
use crate::inputs::Inputs;
use crate::npy::NpyInput;
use crate::options::GlobalOpts;
use crate::output::{Cooperative, Output};
use crate::progress::Progress;
use cosim::pairwise::{Layout, PairPlan, Precision, SetScores, TopK};
use cosim::shard::Shard;
use cosim::stream::{PairStream, StreamElement};
use cosim::Device;
use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// The long help: semantics, layouts, modes, which score means what.
pub const LONG_ABOUT: &str = "\
The cosine similarity of every vector of set A with every vector of set B:
S[i, j] = cos(a_i, b_j) = <a_i, b_j> / (max(|a_i|, eps) * max(|b_j|, eps)), clamped to [-1, 1];
a zero vector gives 0, NaN stays NaN. Sums accumulate in f32 (f64 for float64 inputs).

Sets: with --layout rows (the default) A is [N, D] and B is [M, D], one vector per row, as
embeddings are stored; with --layout cols they are [D, N] and [D, M], one vector per column,
as the flattened [C, H*W] feature maps of `bmm(x.transpose(1, 2), y)` are. --layout-a and
--layout-b set one set's layout. Either set may have a leading batch dim, [B, N, D] or
[B, D, N]: batch b of A is matched with batch b of B, a set without a batch dim is shared by
every batch of the other, and the results then carry a leading B. Nothing is transposed.

Modes (exactly one; B? is the batch dim when there is one):
  -o MATRIX.npy       the matrix S, [B?, N, M]. Written block by block (whole rows, at most
                      --budget bytes each) straight into the file, so a matrix larger than
                      GPU or host memory works, as long as the disk holds it.
  --top-k K -o F.npz  the K largest values of each row of S, [B?, N, K], and their column
                      indices (int64): entries 'values' and 'indices'. Sorted descending, NaN
                      first, ties to the lower index. S is never stored.
  --argmax -o F.npz   each row's best match: 'values' [B?, N] and 'indices' [B?, N].
  --row-mean -o F.npy each row's mean similarity to all of B, [B?, N].
  --mean [-o F.npy]   the mean of all of S, one number per batch ([B] or a scalar), printed
                      on stdout too. Computed as <mean_i a_i/|a_i|, mean_j b_j/|b_j|>.
  --greedy [-o F.npz] BERTScore-style greedy matching, A the candidate, B the reference:
                      precision = the mean over A of each vector's best similarity in B
                      (the row maxima), recall = the mean over B of each vector's best in A
                      (the column maxima), f1 = 2PR / (P + R). Printed on stdout, one line
                      per batch; -o also saves 'precision', 'recall' and 'f1'.
                      --weights-a / --weights-b weight those means (e.g. idf weights), one
                      weight per vector of the set (all batches of it, in order).

Which one number? --mean averages all N*M pairs: two sets of random-ish vectors of the same
kind score their typical similarity, whatever they say. --greedy's f1 matches every vector
with its best counterpart in the other set: it is 1 for identical sets (in any order) and is
the score BERTScore reports for two texts given as token embeddings.

Sets larger than the GPU: when the two sets (with the call's outputs and scratch) would not
fit in the GPU's free memory, they are cut into chunks of whole vectors (A's chunks are
blocks of rows of S, B's blocks of columns; a chunk of a --layout cols set is copied into a
contiguous buffer on the host), every chunk pair runs and the results are merged on the
host. The matrix, --top-k and --argmax are exactly the whole results (ties still go to the
lower index; in f16 and bf16, indices of values equal once rounded may come in another
order, as the whole run ranks f32 sums); --row-mean, --mean and --greedy combine the
per-chunk results (means weighted by the chunks' sizes, maxima taken across chunks), equal
to the whole results up to rounding. On the GPU two chunk pairs are in flight on two
streams: while one computes, the next one's chunks are read, staged in pinned memory and
uploaded, and a chunk already on the device is not uploaded again.

Device: on the GPU the inputs are uploaded once (when they fit); f16, bf16 and f32 run
there, float64 runs on the CPU (with a note; --dtype f32 moves it to the GPU). --fast uses
tensor cores on the GPU (TF32 for f32, f16/bf16 products with f32 sums; about 1e-3 from
exact); the CPU always computes exactly, so --fast changes nothing there.";

const EXAMPLES: &str = "\
Examples:
  # Every query against every key: [1000, 768] and [50000, 768] -> S [1000, 50000]
  cosim pairwise queries.npy keys.npy -o sim.npy

  # ... written in blocks of at most 64 MiB of rows, for a matrix larger than memory
  cosim pairwise queries.npy keys.npy -o sim.npy --budget 64M

  # The 10 nearest keys of every query: values and indices [1000, 10] in one .npz
  cosim pairwise queries.npy keys.npy --top-k 10 -o top10.npz

  # Feature maps [B, C, H*W]: pixel-to-pixel similarity in each image -> [B, H*W, H*W]
  cosim pairwise x.npy y.npy --layout cols -o pixels.npy

  # Two texts as (200, 52, 784) token embeddings (sentences, tokens, dim) -> one number:
  # reshape each to (200*52, 784) (x.reshape(-1, 784) in NumPy), then
  cosim pairwise a.npy b.npy --greedy
  # or keep them [200, 52, 784] -> 200 scores, sentence i of a against sentence i of b
  cosim pairwise a.npy b.npy --greedy -o per_sentence.npz

  # The mean similarity of all pairs (one number per batch)
  cosim pairwise a.npy b.npy --mean";

/// The default of `--budget`: bytes of matrix rows per block.
const DEFAULT_BUDGET: &str = "256M";

/// A set's layout, as given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LayoutArg {
    /// One vector per row: [N, D] or [B, N, D]
    Rows,
    /// One vector per column: [D, N] or [B, D, N]
    Cols,
}

impl From<LayoutArg> for Layout {
    fn from(l: LayoutArg) -> Layout {
        match l {
            LayoutArg::Rows => Layout::Rows,
            LayoutArg::Cols => Layout::Cols,
        }
    }
}

/// Arguments of `cosim pairwise`.
#[derive(clap::Args, Debug)]
#[command(
    long_about = LONG_ABOUT,
    after_help = EXAMPLES,
    group(
        clap::ArgGroup::new("mode")
            .args(["top_k", "argmax", "row_mean", "mean", "greedy"])
            .multiple(false)
    )
)]
pub struct PairwiseArgs {
    /// Set A, the rows of S (.npy: float16/32/64; integers and bool are converted to f32)
    #[arg(value_name = "A.npy")]
    pub a: PathBuf,
    /// Set B, the columns of S; the same vector length D as A
    #[arg(value_name = "B.npy")]
    pub b: PathBuf,
    /// Layout of both sets: rows ([N, D], one vector per row) or cols ([D, N])
    #[arg(long, value_enum, default_value_t = LayoutArg::Rows)]
    pub layout: LayoutArg,
    /// Layout of A only (overrides --layout)
    #[arg(long, value_enum, value_name = "LAYOUT")]
    pub layout_a: Option<LayoutArg>,
    /// Layout of B only (overrides --layout)
    #[arg(long, value_name = "LAYOUT", value_enum)]
    pub layout_b: Option<LayoutArg>,
    /// Each norm is clamped to at least eps [default: 1e-8]
    #[arg(long, allow_negative_numbers = true)]
    pub eps: Option<f64>,
    /// Tensor cores on the GPU (TF32 / f16 / bf16 products, f32 sums; about 1e-3 from exact).
    /// The CPU always computes exactly: there --fast changes nothing
    #[arg(long)]
    pub fast: bool,
    /// Where to write: the matrix (.npy) when no mode is given, else the mode's result
    /// (.npz for --top-k, --argmax and --greedy; .npy for --row-mean and --mean)
    #[arg(
        short,
        long,
        value_name = "OUT",
        required_unless_present_any = ["mean", "greedy"]
    )]
    pub output: Option<PathBuf>,
    /// The K most similar vectors of B for each vector of A: 'values' and 'indices' [B?, N, K]
    #[arg(long, value_name = "K", requires = "output")]
    pub top_k: Option<usize>,
    /// The most similar vector of B for each vector of A: 'values' and 'indices' [B?, N]
    #[arg(long, requires = "output")]
    pub argmax: bool,
    /// Each row's mean similarity, [B?, N]
    #[arg(long, requires = "output")]
    pub row_mean: bool,
    /// The mean of the whole matrix, per batch; printed on stdout
    #[arg(long)]
    pub mean: bool,
    /// Greedy matching (BERTScore): precision, recall and F1 per batch, printed on stdout
    #[arg(long)]
    pub greedy: bool,
    /// --greedy: one weight per vector of A (e.g. idf), for the weighted precision
    #[arg(long, value_name = "W.npy", requires = "greedy")]
    pub weights_a: Option<PathBuf>,
    /// --greedy: one weight per vector of B, for the weighted recall
    #[arg(long, value_name = "W.npy", requires = "greedy")]
    pub weights_b: Option<PathBuf>,
    /// The matrix mode: bytes of rows per block (at least one row), with an optional
    /// suffix K, M, G or T (powers of 1024)
    #[arg(
        long,
        value_name = "BYTES",
        default_value = DEFAULT_BUDGET,
        value_parser = parse_bytes,
        conflicts_with = "mode"
    )]
    pub budget: usize,
    /// --top-k / --argmax on shard I of N (0-based) of B's vectors: B's contiguous I-th
    /// N-th, indices global, the file marked as that shard; `cosim merge` joins the N files
    /// into the whole result, equal to an unsharded run's file
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
}

/// `--shard I/N`.
fn parse_shard(s: &str) -> std::result::Result<Shard, String> {
    Shard::parse(s).map_err(|e| e.to_string())
}

/// What to compute and where it goes.
#[derive(Clone, Copy, Debug)]
pub enum Mode<'a> {
    Matrix(&'a Path),
    TopK(usize, &'a Path),
    Argmax(&'a Path),
    RowMean(&'a Path),
    Mean(Option<&'a Path>),
    Greedy(Option<&'a Path>),
}

impl PairwiseArgs {
    /// The mode the flags select (clap has already refused two modes, and a mode that needs
    /// `-o` without it).
    fn mode(&self) -> Result<Mode<'_>> {
        let out = self.output.as_deref();
        let need = |flag: &str| {
            out.ok_or_else(|| CliError::usage(format!("{flag} needs -o OUT to write to")))
        };
        Ok(if let Some(k) = self.top_k {
            Mode::TopK(k, need("--top-k")?)
        } else if self.argmax {
            Mode::Argmax(need("--argmax")?)
        } else if self.row_mean {
            Mode::RowMean(need("--row-mean")?)
        } else if self.mean {
            Mode::Mean(out)
        } else if self.greedy {
            Mode::Greedy(out)
        } else {
            Mode::Matrix(out.ok_or_else(|| {
                CliError::usage(
                    "give a mode: -o MATRIX.npy, --top-k K, --argmax, --row-mean, --mean or --greedy",
                )
            })?)
        })
    }
}

impl<'a> Mode<'a> {
    /// The file this mode writes, if any.
    fn output(self) -> Option<&'a Path> {
        match self {
            Mode::Matrix(p) | Mode::TopK(_, p) | Mode::Argmax(p) | Mode::RowMean(p) => Some(p),
            Mode::Mean(p) | Mode::Greedy(p) => p,
        }
    }
}

/// Runs `cosim pairwise`.
///
/// # Errors
/// Input and usage errors (exit code 2) before any output is created or any work is done;
/// device and write failures (exit code 1), leaving no output behind.
pub fn run(args: &PairwiseArgs, g: &GlobalOpts) -> Result<()> {
    let mode = args.mode()?;
    let inputs = Inputs::open(&args.a, &args.b, g)?;
    let layout_a = args.layout_a.unwrap_or(args.layout).into();
    let layout_b = args.layout_b.unwrap_or(args.layout).into();
    let precision = if args.fast {
        Precision::Fast
    } else {
        Precision::Exact
    };
    let plan = PairPlan::new(&inputs.a.shape, layout_a, &inputs.b.shape, layout_b)
        .and_then(|p| p.eps(args.eps))
        .map_err(|e| inputs.refusal(e))?
        .precision(precision);
    if let Mode::TopK(k, _) = mode {
        plan.check_k(k)
            .map_err(|e| CliError::usage(format!("--top-k {k}: {e} ({})", inputs.b.describe())))?;
    }
    if let Some(s) = args.shard {
        crate::shards::check(s, mode, &plan, &inputs)?;
    }
    if let Mode::Matrix(p) = mode {
        let shape = plan.matrix_shape();
        let elems = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if elems.and_then(|n| n.checked_mul(8)).is_none() {
            return Err(CliError::file(
                p,
                format!("the matrix {shape:?} has more elements than this machine can address"),
            ));
        }
    }
    let weights = [
        open_weights(
            args.weights_a.as_deref(),
            "--weights-a",
            "a",
            &inputs.a,
            plan.a_vectors(),
        )?,
        open_weights(
            args.weights_b.as_deref(),
            "--weights-b",
            "b",
            &inputs.b,
            plan.b_vectors(),
        )?,
    ];
    let out = match mode.output() {
        Some(p) => {
            let npz = matches!(mode, Mode::TopK(..) | Mode::Argmax(_) | Mode::Greedy(_));
            let ext = if npz { "npz" } else { "npy" };
            if p.extension().and_then(|e| e.to_str()) != Some(ext) {
                g.note(format!(
                    "{} is written as a .{ext} file, whatever its name says",
                    p.display()
                ));
            }
            Some(Output::create(p, g)?)
        }
        None => None,
    };
    let job = Job {
        inputs: &inputs,
        plan: &plan,
        mode,
        weights: &weights,
        budget: args.budget,
        quiet: g.quiet,
        shard: args.shard,
    };
    let devices = g.devices()?;
    let gpu = devices.iter().any(|d| !matches!(d, Device::Cpu));
    let cpu = [Device::Cpu];
    let chunk = g.block_bytes;
    with_dtype!(inputs.dtype, T => {
        if gpu && T::DTYPE == crate::dtype::Dtype::F64 {
            g.note(
                "the GPU's pairwise kernels take float16, bfloat16 and float32: computing \
                 float64 on the CPU (--dtype f32 runs it on the GPU)",
            );
            job.compute::<T>(&cpu, out, chunk)
        } else {
            job.compute::<T>(&devices, out, chunk)
        }
    })
}

/// Opens a weights file (`--weights-a` or `--weights-b`) and checks that it holds one value
/// per vector of its set (any shape: `[N]`, or `[B, N]` for a batched set).
fn open_weights(
    path: Option<&Path>,
    flag: &str,
    which: &str,
    set: &NpyInput,
    vectors: usize,
) -> Result<Option<NpyInput>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let w = NpyInput::open(path)?;
    let len: usize = w.shape.iter().product();
    if len != vectors {
        return Err(CliError::usage(format!(
            "{flag} {}: holds {len} values, but set {which} ({}) has {vectors} vectors; \
             give one weight per vector",
            w.describe(),
            set.describe()
        )));
    }
    Ok(Some(w))
}

/// A validated job: what to compute, on which inputs.
struct Job<'a> {
    inputs: &'a Inputs,
    plan: &'a PairPlan,
    mode: Mode<'a>,
    /// `--weights-a` and `--weights-b`, checked against the plan.
    weights: &'a [Option<NpyInput>; 2],
    budget: usize,
    quiet: bool,
    /// `--shard`: the job runs on that shard of B.
    shard: Option<Shard>,
}

impl Job<'_> {
    /// Computes the mode on `devices` in `T` through the library's streaming engine (which
    /// cuts the sets into chunks when they do not fit a device, or of at most `chunk_bytes`
    /// when given), writes `out` (created by [`run`] when the mode writes a file) and commits
    /// it, then prints what the mode prints.
    fn compute<T: Compute + StreamElement>(
        &self,
        devices: &[Device],
        out: Option<Output>,
        chunk_bytes: Option<usize>,
    ) -> Result<()> {
        let progress = Progress::start(self.quiet);
        progress.phase("reading inputs");
        let (a, b_whole) = (self.inputs.a.values::<T>(), self.inputs.b.values::<T>());
        let refusal = |e| self.inputs.refusal(e);
        // With --shard, B is this shard's vectors and the plan is the shard's.
        let sharded = match self.shard {
            Some(s) => Some(
                crate::shards::input(s, self.plan, &self.inputs.b, &b_whole).map_err(refusal)?,
            ),
            None => None,
        };
        let (b, plan): (&[T], &PairPlan) = match &sharded {
            Some((b, p)) => (b, p),
            None => (&b_whole, self.plan),
        };
        let on: Vec<String> = devices.iter().map(Device::describe).collect();
        let on = on.join(" + ");
        progress.phase(format!("computing on {on}"));
        let on_progress = |p: cosim::stream::Progress| {
            if p.total > 1 {
                progress.phase(format!(
                    "computing on {on}: chunk pair {} of {}",
                    p.done, p.total
                ));
            }
            if crate::output::interrupted() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let mut stream = PairStream::new(plan, &a, b)
            .and_then(|s| s.on(devices))
            .map_err(refusal)?
            .block_bytes(self.budget)
            .on_progress(&on_progress);
        if let Some(bytes) = chunk_bytes {
            stream = stream.chunk_bytes(bytes);
        }
        let _cooperative = Cooperative::start();
        let mut out = out;
        let mut printed = String::new();
        match (self.mode, out.as_mut()) {
            (Mode::Matrix(_), Some(o)) => {
                let mut file = o.npy_stream::<T>(&plan.matrix_shape())?;
                stream.matrix(|blk| file.append(blk.values))?;
                file.finish()?;
            }
            (Mode::TopK(k, _), Some(o)) => {
                // A shard narrower than k gives all of its columns.
                let t = stream.top_k(k.min(plan.m)).map_err(refusal)?;
                self.write_best(o, t)?;
            }
            (Mode::Argmax(_), Some(o)) => {
                let t = stream.argmax().map_err(refusal)?;
                self.write_best(o, t)?;
            }
            (Mode::RowMean(_), Some(o)) => {
                let v = stream.row_mean().map_err(refusal)?;
                o.write_npy(&v.shape, &v.values)?;
            }
            (Mode::Mean(_), o) => {
                let v = stream.mean().map_err(refusal)?;
                if let Some(o) = o {
                    o.write_npy(&v.shape, &v.values)?;
                }
                for (i, v) in v.values.iter().enumerate() {
                    let _ = writeln!(printed, "{}mean {v}", label(plan, i));
                }
            }
            (Mode::Greedy(_), o) => {
                let [wa, wb] = self
                    .weights
                    .each_ref()
                    .map(|w| w.as_ref().map(NpyInput::values::<T>));
                let s = stream
                    .set_similarity(wa.as_deref(), wb.as_deref())
                    .map_err(refusal)?;
                if let Some(o) = o {
                    write_scores(o, &s)?;
                }
                printed = scores_text(plan, &s);
            }
            (_, None) => {
                return Err(CliError::runtime(
                    "internal: this mode writes a file, but none was opened",
                ));
            }
        }
        drop(progress);
        if let Some(o) = out {
            o.commit()?;
        }
        crate::print_stdout(&printed)
    }
}

impl Job<'_> {
    /// Writes a top-k or argmax result: as it is, or as this job's shard (indices made
    /// global, the file marked for `cosim merge`).
    fn write_best<T: Compute>(&self, o: &mut Output, mut t: TopK<Vec<T>, Vec<u32>>) -> Result<()> {
        let Some(shard) = self.shard else {
            return write_top(o, &t);
        };
        let offset = shard.range(self.plan.m).start;
        let offset = u32::try_from(offset)
            .map_err(|_| CliError::runtime("a column index does not fit in 32 bits"))?;
        for i in &mut t.indices {
            *i += offset;
        }
        let k = match self.mode {
            Mode::TopK(k, _) => k,
            _ => 0,
        };
        let mark = crate::shards::Mark::new(shard, k, self.plan);
        let mut z = o.npz()?;
        z.values("values", &t.shape, &t.values)?;
        z.indices("indices", &t.shape, &t.indices)?;
        mark.write(&mut z)?;
        z.finish()
    }
}

/// `batch i: ` before a batched result's line; nothing without a batch dim.
fn label(plan: &PairPlan, i: usize) -> String {
    if plan.batched {
        format!("batch {i}: ")
    } else {
        String::new()
    }
}

/// One line per batch: `precision P recall R f1 F`.
fn scores_text<T: Compute>(plan: &PairPlan, s: &SetScores<Vec<T>>) -> String {
    let mut text = String::new();
    for (i, ((p, r), f)) in s.precision.iter().zip(&s.recall).zip(&s.f1).enumerate() {
        let _ = writeln!(text, "{}precision {p} recall {r} f1 {f}", label(plan, i));
    }
    text
}

/// Top-k or argmax results as an `.npz`: `values` and `indices` (int64).
fn write_top<T: Compute>(o: &mut Output, t: &TopK<Vec<T>, Vec<u32>>) -> Result<()> {
    let mut z = o.npz()?;
    z.values("values", &t.shape, &t.values)?;
    z.indices("indices", &t.shape, &t.indices)?;
    z.finish()
}

/// Greedy scores as an `.npz`: `precision`, `recall`, `f1`.
fn write_scores<T: Compute>(o: &mut Output, s: &SetScores<Vec<T>>) -> Result<()> {
    let mut z = o.npz()?;
    z.values("precision", &s.shape, &s.precision)?;
    z.values("recall", &s.shape, &s.recall)?;
    z.values("f1", &s.shape, &s.f1)?;
    z.finish()
}

/// Parses a byte count: digits with an optional suffix K, M, G or T (powers of 1024,
/// optionally followed by `B` or `iB`, any case): `1048576`, `64M`, `1GiB`.
pub fn parse_bytes(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let bad = || format!("'{s}' is not a byte count: give e.g. 1048576, 64M or 1G");
    let n: usize = num.parse().map_err(|_| bad())?;
    let unit = suffix.to_ascii_lowercase();
    let unit = unit.trim_end_matches("ib").trim_end_matches('b');
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    let bytes = n
        .checked_mul(1usize << shift)
        .ok_or_else(|| format!("'{s}' is too large"))?;
    if bytes == 0 {
        return Err("the budget must be at least 1 byte".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2k"), Ok(2048));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("3gb"), Ok(3 << 30));
        for bad in ["", "M", "0", "1.5G", "-1", "12X", "1 G"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }
}
