//! `cosim pairwise --shard I/N` and `cosim merge`: a top-k or argmax job split along B (the
//! corpus) into contiguous shards ([`cosim::shard::Shard`]), each run on its own (one per
//! node of a job array), then joined. A shard's `.npz` holds its `values` and `indices`
//! (global column indices) and marks that say which job it belongs to: `shard` [I, N], `k`
//! (0 for argmax), the sets' shapes and layouts, eps and --fast. `cosim merge` refuses files
//! whose marks differ (saying which), a missing or repeated shard, and anything that is not a
//! shard; it merges the lists with [`cosim::shard::merge_rows`] and writes `values` and
//! `indices` exactly as an unsharded run writes them.

use crate::dtype::{with_dtype, Compute};
use crate::error::{CliError, Result};
use crate::inputs::Inputs;
use crate::npy::NpyInput;
use crate::options::GlobalOpts;
use crate::output::{NpzWriter, Output};
use crate::pairwise::Mode;
use cosim::pairwise::{Layout, PairPlan, Precision};
use cosim::shard::{merge_rows, slice_set, Part, Shard};
use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The long help of `cosim merge`.
pub const LONG_ABOUT: &str = "\
Joins the shards of a `cosim pairwise --top-k K` or `--argmax` job into the whole result.

Run the job once per shard of B, e.g. as a job array (Slurm, Kubernetes, Ray: one task per
shard), each task on any machine with the same two input files:
  cosim pairwise q.npy keys.npy --top-k 10 --shard 0/2 -o part0.npz
  cosim pairwise q.npy keys.npy --top-k 10 --shard 1/2 -o part1.npz
then, anywhere:
  cosim merge -o top10.npz part0.npz part1.npz
Shard I of N covers B's vectors [I*M/N, (I+1)*M/N); its indices are already global. The
merged file holds 'values' and 'indices' as an unsharded run writes them, equal to its file
array for array (in float16 and bfloat16, indices of values equal once rounded may come in
another order: a single run ranks the unrounded sums). Files from different jobs (another
k, shape, layout, eps or --fast), a missing or repeated shard, or a file that is not a
shard are refused, naming the difference.";

/// Arguments of `cosim merge`.
#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// The shards' files (any order), as written by `cosim pairwise --shard I/N`
    #[arg(value_name = "SHARD.npz", required = true)]
    pub shards: Vec<PathBuf>,
    /// Where to write the whole result (.npz: 'values' and 'indices')
    #[arg(short, long, value_name = "ALL.npz")]
    pub output: PathBuf,
}

/// Refuses `--shard` with a mode it does not serve, or a shard with no vectors.
///
/// # Errors
/// A usage error naming the problem.
pub fn check(shard: Shard, mode: Mode<'_>, plan: &PairPlan, inputs: &Inputs) -> Result<()> {
    if !matches!(mode, Mode::TopK(..) | Mode::Argmax(_)) {
        return Err(CliError::usage(
            "--shard works with --top-k and --argmax, whose shards `cosim merge` joins exactly",
        ));
    }
    if shard.range(plan.m).is_empty() {
        return Err(CliError::usage(format!(
            "--shard {}/{}: {} holds {} vectors, so this shard would be empty; use at most {} shards",
            shard.index,
            shard.count,
            inputs.b.describe(),
            plan.m,
            plan.m
        )));
    }
    Ok(())
}

/// Shard `shard` of set B (`b`, the whole set's values) and the plan of A against it.
///
/// # Errors
/// The library's refusals (the shapes were validated with the whole plan).
pub fn input<'a, T: Compute>(
    shard: Shard,
    whole: &PairPlan,
    b: &NpyInput,
    values: &'a [T],
) -> cosim::Result<(Cow<'a, [T]>, PairPlan)> {
    let layout = whole.b_layout;
    let (part, shape) = slice_set(values, &b.shape, layout, shard.range(whole.m))?;
    let plan = PairPlan::new(whole.a_shape(), whole.a_layout, &shape, layout)?
        .eps(Some(whole.eps))?
        .precision(whole.precision);
    Ok((part, plan))
}

/// What marks a shard's file: which shard, of which job.
#[derive(Clone, Debug, PartialEq)]
pub struct Mark {
    shard: Shard,
    /// B's vectors in the whole job.
    columns: usize,
    /// The requested k; 0 for argmax.
    k: usize,
    a_shape: Vec<usize>,
    b_shape: Vec<usize>,
    /// 0 rows, 1 columns: A's, then B's.
    layouts: [usize; 2],
    eps: f64,
    fast: bool,
}

/// The mark entries, by name.
const MARKS: [&str; 7] = ["shard", "k", "a_shape", "b_shape", "layouts", "eps", "fast"];

impl Mark {
    /// The mark of `shard` of the job (`whole` plan, `k` or 0 for argmax).
    pub fn new(shard: Shard, k: usize, whole: &PairPlan) -> Mark {
        let code = |l: Layout| usize::from(l == Layout::Cols);
        Mark {
            shard,
            columns: whole.m,
            k,
            a_shape: whole.a_shape().to_vec(),
            b_shape: whole.b_shape().to_vec(),
            layouts: [code(whole.a_layout), code(whole.b_layout)],
            eps: whole.eps,
            fast: whole.precision == Precision::Fast,
        }
    }

    /// Adds the mark's entries to a shard's `.npz`.
    ///
    /// # Errors
    /// A write failure, or a number past `u32`.
    pub fn write(&self, z: &mut NpzWriter<'_>) -> Result<()> {
        let u = |v: &[usize]| -> Result<Vec<u32>> {
            v.iter()
                .map(|&x| {
                    u32::try_from(x).map_err(|_| {
                        CliError::runtime(format!("{x} does not fit a shard's mark (u32)"))
                    })
                })
                .collect()
        };
        let ints = [
            ("shard", u(&[self.shard.index, self.shard.count])?),
            ("k", u(&[self.k])?),
            ("a_shape", u(&self.a_shape)?),
            ("b_shape", u(&self.b_shape)?),
            ("layouts", u(&self.layouts)?),
            ("fast", vec![u32::from(self.fast)]),
        ];
        for (name, v) in &ints {
            z.indices(name, &[v.len()], v)?;
        }
        z.values("eps", &[1], &[self.eps])
    }

    /// The differences between two marks of one job, besides the shard index: what to say
    /// when they differ.
    fn differs(&self, other: &Mark) -> Option<String> {
        let mut d = Vec::new();
        if self.shard.count != other.shard.count {
            d.push(format!(
                "the number of shards ({} vs {})",
                self.shard.count, other.shard.count
            ));
        }
        if self.k != other.k {
            let name = |k| match k {
                0 => "argmax".to_string(),
                k => format!("top-{k}"),
            };
            d.push(format!("the mode ({} vs {})", name(self.k), name(other.k)));
        }
        if self.a_shape != other.a_shape {
            d.push(format!(
                "A's shape ({:?} vs {:?})",
                self.a_shape, other.a_shape
            ));
        }
        if self.b_shape != other.b_shape {
            d.push(format!(
                "B's shape ({:?} vs {:?})",
                self.b_shape, other.b_shape
            ));
        }
        if self.layouts != other.layouts {
            d.push("the layouts".into());
        }
        if self.eps.to_bits() != other.eps.to_bits() {
            d.push(format!("eps ({} vs {})", self.eps, other.eps));
        }
        if self.fast != other.fast {
            d.push("--fast".into());
        }
        (!d.is_empty()).then(|| d.join(", "))
    }
}

/// One shard's file, read: its mark and its two result arrays.
struct ShardFile {
    path: PathBuf,
    mark: Mark,
    values: NpyInput,
    indices: NpyInput,
}

/// The arrays of an `.npz`, by name.
fn read_npz(path: &Path) -> Result<Vec<(String, NpyInput)>> {
    let fail = |m: String| CliError::file(path, m);
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| fail(format!("not an .npz archive ({e})")))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| fail(format!("cannot read entry {i}: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| fail(format!("cannot read entry {i}'s name: {e}")))?
            .trim_end_matches(".npy")
            .to_owned();
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| fail(format!("cannot read {name}: {e}")))?;
        let label = PathBuf::from(format!("{}:{name}", path.display()));
        out.push((name, NpyInput::from_vec(&label, bytes)?));
    }
    Ok(out)
}

/// Whole numbers from an integer array (the marks, the indices).
fn whole_numbers(x: &NpyInput, max: f64) -> Result<Vec<usize>> {
    if !x.source.is_integral() {
        return Err(CliError::file(&x.path, "must hold integers"));
    }
    x.values::<f64>()
        .iter()
        .map(|&v| {
            (v >= 0.0 && v <= max && v.fract() == 0.0)
                .then_some(v as usize)
                .ok_or_else(|| CliError::file(&x.path, format!("holds {v}, out of range")))
        })
        .collect()
}

impl ShardFile {
    fn read(path: &Path) -> Result<ShardFile> {
        let mut arrays = read_npz(path)?;
        let mut take = |name: &str| {
            let at = arrays.iter().position(|(n, _)| n == name);
            at.map(|i| arrays.swap_remove(i).1).ok_or_else(|| {
                CliError::file(
                    path,
                    format!(
                        "has no '{name}': not a shard of a `cosim pairwise --shard I/N` run \
                         (a shard holds values, indices and {})",
                        MARKS.join(", ")
                    ),
                )
            })
        };
        let (values, indices) = (take("values")?, take("indices")?);
        let mut ints =
            |name: &str| -> Result<Vec<usize>> { whole_numbers(&take(name)?, u32::MAX as f64) };
        let (shard, k, a_shape, b_shape, layouts, fast) = (
            ints("shard")?,
            ints("k")?,
            ints("a_shape")?,
            ints("b_shape")?,
            ints("layouts")?,
            ints("fast")?,
        );
        let eps = take("eps")?.values::<f64>().first().copied();
        let bad = |what: &str| CliError::file(path, format!("has a malformed '{what}' mark"));
        let (&[i, n], &[k], &[la, lb], &[fast], Some(eps)) =
            (&shard[..], &k[..], &layouts[..], &fast[..], eps)
        else {
            return Err(bad("shard, k, layouts, fast or eps"));
        };
        let shard = Shard::new(i, n).map_err(|e| CliError::file(path, e))?;
        let whole = |shape: &[usize], layout: usize| -> Option<usize> {
            let inner = &shape[shape.len().checked_sub(2)?..];
            Some(if layout == 0 { inner[0] } else { inner[1] })
        };
        let columns = whole(&b_shape, lb).ok_or_else(|| bad("b_shape"))?;
        Ok(ShardFile {
            path: path.to_owned(),
            mark: Mark {
                shard,
                columns,
                k,
                a_shape,
                b_shape,
                layouts: [la, lb],
                eps,
                fast: fast != 0,
            },
            values,
            indices,
        })
    }
}

/// Runs `cosim merge`.
///
/// # Errors
/// A usage error (exit code 2) for shards that do not make one whole, before any output is
/// created; write failures (exit code 1), leaving no output behind.
pub fn run(args: &MergeArgs, g: &GlobalOpts) -> Result<()> {
    let mut files = args
        .shards
        .iter()
        .map(|p| ShardFile::read(p))
        .collect::<Result<Vec<_>>>()?;
    let first = files[0].mark.clone();
    for f in &files[1..] {
        if let Some(d) = first.differs(&f.mark) {
            return Err(CliError::usage(format!(
                "{} and {} are shards of different jobs: they differ in {d}",
                files[0].path.display(),
                f.path.display()
            )));
        }
        if f.values.source != files[0].values.source {
            return Err(CliError::usage(format!(
                "{} and {} hold different value types ({} vs {})",
                files[0].path.display(),
                f.path.display(),
                files[0].values.source.name(),
                f.values.source.name()
            )));
        }
    }
    files.sort_by_key(|f| f.mark.shard.index);
    for (i, f) in files.iter().enumerate() {
        if f.mark.shard.index != i {
            let missing =
                (0..first.shard.count).find(|j| files.iter().all(|f| f.mark.shard.index != *j));
            return Err(CliError::usage(match missing {
                Some(j) if f.mark.shard.index > i => format!(
                    "shard {j}/{} is missing (give all {} shards)",
                    first.shard.count, first.shard.count
                ),
                _ => format!(
                    "shard {}/{} is given twice ({})",
                    f.mark.shard.index,
                    first.shard.count,
                    f.path.display()
                ),
            }));
        }
    }
    if files.len() != first.shard.count {
        return Err(CliError::usage(format!(
            "shard {}/{} is missing (give all {} shards)",
            files.len(),
            first.shard.count,
            first.shard.count
        )));
    }
    let dtype = files[0].values.source.natural();
    let mut out = Output::create(&args.output, g)?;
    with_dtype!(dtype, T => merge::<T>(&files, &first, &mut out))?;
    out.commit()
}

/// Merges the shards' lists in `T` (the files' value type) into `out`.
fn merge<T: Compute>(files: &[ShardFile], mark: &Mark, out: &mut Output) -> Result<()> {
    // Every shard's values are [rows..., k_s] (top-k) or [rows...] (argmax).
    let lead = |f: &ShardFile| -> Vec<usize> {
        let s = &f.values.shape;
        if mark.k == 0 {
            s.clone()
        } else {
            s[..s.len().saturating_sub(1)].to_vec()
        }
    };
    let shape0 = lead(&files[0]);
    let rows: usize = shape0.iter().product();
    let mut values = Vec::with_capacity(files.len());
    let mut indices = Vec::with_capacity(files.len());
    for f in files {
        let want = f.mark.shard.range(mark.columns).len().min(mark.k.max(1));
        if lead(f) != shape0
            || f.values.shape != f.indices.shape
            || f.values.shape.iter().product::<usize>() != rows * want
        {
            return Err(CliError::usage(format!(
                "{}: its values {:?} and indices {:?} are not this job's shard {}/{} \
                 ({rows} lists of {want})",
                f.path.display(),
                f.values.shape,
                f.indices.shape,
                f.mark.shard.index,
                f.mark.shard.count
            )));
        }
        let start = f.mark.shard.range(mark.columns).start;
        let global = whole_numbers(&f.indices, u32::MAX as f64)?;
        // The files hold global indices; the merge takes them counted from 0.
        let local = global
            .iter()
            .map(|&i| {
                i.checked_sub(start)
                    .and_then(|l| u32::try_from(l).ok())
                    .ok_or_else(|| {
                        CliError::usage(format!(
                            "{}: index {i} lies outside its shard",
                            f.path.display()
                        ))
                    })
            })
            .collect::<Result<Vec<u32>>>()?;
        values.push(f.values.values::<T>().into_owned());
        indices.push(local);
    }
    let parts: Vec<Part<'_, T>> = files
        .iter()
        .zip(values.iter().zip(&indices))
        .map(|(f, (v, i))| Part {
            values: v,
            indices: i,
            offset: f.mark.shard.range(mark.columns).start,
        })
        .collect();
    let k = mark.k.max(1);
    let (v, i) = merge_rows(rows, k, &parts).map_err(|e| CliError::runtime(e.to_string()))?;
    let mut shape = shape0;
    if mark.k != 0 {
        shape.push(k.min(mark.columns));
    }
    let mut z = out.npz()?;
    z.values("values", &shape, &v)?;
    z.indices("indices", &shape, &i)?;
    z.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_name_what_differs() {
        let m = Mark {
            shard: Shard { index: 0, count: 2 },
            columns: 10,
            k: 3,
            a_shape: vec![4, 5],
            b_shape: vec![10, 5],
            layouts: [0, 0],
            eps: 1e-8,
            fast: false,
        };
        let other = Mark {
            shard: Shard { index: 1, count: 2 },
            ..m.clone()
        };
        assert_eq!(m.differs(&other), None);
        let worse = Mark {
            k: 0,
            b_shape: vec![11, 5],
            ..other
        };
        let d = m.differs(&worse).unwrap_or_default();
        assert!(
            d.contains("top-3 vs argmax") && d.contains("B's shape"),
            "{d}"
        );
    }
}
