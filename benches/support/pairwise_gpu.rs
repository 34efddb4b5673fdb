//! GPU cases of the pairwise benchmark: our kernels next to cuBLAS GEMMs on the same shapes,
//! measured in the same run with CUDA events (warm-up, median), with the device memory each
//! op allocates besides its inputs and outputs. Included by benches/pairwise.rs.

use cosim::cuda::{Cuda, PairElement};
use cosim::cudarc::cublas::{sys as blas_sys, CudaBlas, Gemm, GemmConfig};
use cosim::cudarc::driver::CudaSlice;
use cosim::pairwise::{Layout, PairPlan, Precision};
use cosim::{bf16, Element};

/// PyTorch on the same GPU (SPEC §5), for the table.
const TORCH_MATRIX_MS: f64 = 128.0;
const TORCH_TOP10_MS: [f64; 3] = [181.0, 71.0, 44.6];
const TORCH_BMM_MS: f64 = 4.34;
const TORCH_SET_MS: [f64; 2] = [3.63, 3.78];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median milliseconds of `f` on the handle's stream: 2 warm-ups, then `reps` timed runs.
fn time(
    cuda: &Cuda,
    reps: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for _ in 0..2 {
        f()?;
    }
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        ms.push(cuda.time_ms(&mut f)?);
    }
    Ok(median(ms))
}

/// Pseudo-random values in [-1, 1) (xorshift), uploaded.
fn random<T: PairElement>(cuda: &Cuda, n: usize, seed: u64) -> anyhow::Result<CudaSlice<T>> {
    let mut s = seed | 1;
    let host: Vec<T> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            T::from_f64((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        })
        .collect();
    Ok(cuda.upload(&host)?)
}

/// One GPU case: ours next to its reference (cuBLAS measured in this run, or PyTorch on the
/// same GPU from SPEC §5 where no library call does the same job).
pub struct GpuRow {
    pub case: String,
    pub dtype: &'static str,
    pub ms: f64,
    pub flop: f64,
    pub extra_bytes: usize,
    pub reference: String,
    pub ref_ms: f64,
}

struct Report {
    rows: Vec<GpuRow>,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        case: &str,
        dtype: &'static str,
        ms: f64,
        flop: f64,
        extra_bytes: usize,
        reference: &str,
        ref_ms: f64,
    ) {
        println!(
            "cuda {case:<40} {dtype:>5} {ms:9.3} ms {:8.1} TFLOP/s | {reference} {ref_ms:.3} ms ({:.2}× ours) | extra {extra_bytes} B",
            flop / (ms * 1e-3) / 1e12,
            ref_ms / ms
        );
        self.rows.push(GpuRow {
            case: case.into(),
            dtype,
            ms,
            flop,
            extra_bytes,
            reference: reference.into(),
            ref_ms,
        });
    }
}

/// Times the fused top-10 of `plan` (5 runs) and reports it next to `reference`.
#[allow(clippy::too_many_arguments)]
fn top10<T: PairElement>(
    r: &mut Report,
    cuda: &Cuda,
    plan: &PairPlan,
    (a, b): (&CudaSlice<T>, &CudaSlice<T>),
    case: &str,
    flops: f64,
    reference: &str,
    ref_ms: f64,
) -> anyhow::Result<()> {
    let ms = time(cuda, 5, || {
        Ok(cuda.pairwise_top_k(plan, a, b, 10).map(drop)?)
    })?;
    let extra = extra(cuda, plan, "topk", 10);
    r.add(case, T::NAME, ms, flops, extra, reference, ref_ms);
    Ok(())
}

/// Device bytes our pairwise ops allocate besides inputs and outputs.
fn extra(cuda: &Cuda, plan: &PairPlan, op: &str, k: usize) -> usize {
    if op == "topk" {
        return cuda.top_k_scratch_bytes(plan, k);
    }
    let norms = 4 * (plan.a_vectors() + plan.b_vectors());
    norms
        + match op {
            "argmax" => 8 * plan.batch * plan.n,
            "greedy" => 4 * plan.batch * (plan.n + plan.m),
            "mean" => 4 * plan.d * 2 * plan.batch,
            _ => 0,
        }
}

/// cuBLAS `C[N][M] = A[N][D] · B[M][D]ᵀ` (row-major), the GEMM our matrix kernel replaces.
fn cublas_nt<T>(
    blas: &CudaBlas,
    n: usize,
    m: usize,
    d: usize,
    a: &CudaSlice<T>,
    b: &CudaSlice<T>,
    c: &mut CudaSlice<T>,
) -> anyhow::Result<()>
where
    CudaBlas: Gemm<T>,
    T: Element,
{
    let cfg = GemmConfig {
        transa: blas_sys::cublasOperation_t::CUBLAS_OP_T,
        transb: blas_sys::cublasOperation_t::CUBLAS_OP_N,
        m: m as i32,
        n: n as i32,
        k: d as i32,
        alpha: T::from_f64(1.0),
        lda: d as i32,
        ldb: d as i32,
        beta: T::from_f64(0.0),
        ldc: m as i32,
    };
    // SAFETY: column-major view of the row-major buffers: b is D×M (ld D), a is D×N (ld D), c
    // is M×N (ld M); the three buffers hold exactly those sizes.
    unsafe { blas.gemm(cfg, b, a, c) }?;
    Ok(())
}

/// cuBLAS computing the two products of the matrix's gradient (row-major): `PA[N][D] =
/// G[N][M] · B[M][D]` and `PB[M][D] = G[N][M]ᵀ · A[N][D]`, what our backward does with the
/// inverse norms folded in.
#[allow(clippy::too_many_arguments)]
fn cublas_grads<T>(
    blas: &CudaBlas,
    (n, m, d): (usize, usize, usize),
    a: &CudaSlice<T>,
    b: &CudaSlice<T>,
    g: &CudaSlice<T>,
    pa: &mut CudaSlice<T>,
    pb: &mut CudaSlice<T>,
) -> anyhow::Result<()>
where
    CudaBlas: Gemm<T>,
    T: Element,
{
    let cfg = |transb, rows: usize, k: usize, ldb: usize| GemmConfig {
        transa: blas_sys::cublasOperation_t::CUBLAS_OP_N,
        transb,
        m: d as i32,
        n: rows as i32,
        k: k as i32,
        alpha: T::from_f64(1.0),
        lda: d as i32,
        ldb: ldb as i32,
        beta: T::from_f64(0.0),
        ldc: d as i32,
    };
    // SAFETY: column-major views of the row-major buffers: PAᵀ (D×N, ld D) = Bᵀ (D×M, ld D) ·
    // Gᵀ (M×N, ld M); PBᵀ (D×M, ld D) = Aᵀ (D×N, ld D) · G (N×M: Gᵀ's memory, M×N with ld M,
    // transposed). Every buffer holds exactly its size.
    unsafe {
        blas.gemm(
            cfg(blas_sys::cublasOperation_t::CUBLAS_OP_N, n, m, m),
            b,
            g,
            pa,
        )?;
        blas.gemm(
            cfg(blas_sys::cublasOperation_t::CUBLAS_OP_T, m, n, m),
            a,
            g,
            pb,
        )?;
    }
    Ok(())
}

/// The matrix's gradient, ours against cuBLAS's two products on the same shapes.
fn backward_cases(r: &mut Report, cuda: &Cuda, blas: &CudaBlas) -> anyhow::Result<()> {
    let (n, d) = (16384usize, 768usize);
    let flops = 2.0 * 2.0 * (n * n * d) as f64;
    let plan = PairPlan::new(&[n, d], Layout::Rows, &[n, d], Layout::Rows)?;
    let fast = plan.clone().precision(Precision::Fast);
    let case = "backward 16384×16384×768";
    fn run<T: PairElement>(
        r: &mut Report,
        cuda: &Cuda,
        blas: &CudaBlas,
        plans: &[(&PairPlan, String, &str, bool)],
        (n, d, flops): (usize, usize, f64),
    ) -> anyhow::Result<()>
    where
        CudaBlas: Gemm<T>,
    {
        let a = random::<T>(cuda, n * d, 21)?;
        let b = random::<T>(cuda, n * d, 22)?;
        let g = random::<T>(cuda, n * n, 23)?;
        let (mut ga, mut gb) = (random::<T>(cuda, n * d, 0)?, random::<T>(cuda, n * d, 0)?);
        for (plan, name, reference, tf32) in plans {
            set_math(blas, *tf32)?;
            let blas_ms = time(cuda, 5, || {
                cublas_grads(blas, (n, n, d), &a, &b, &g, &mut ga, &mut gb)
            })?;
            set_math(blas, false)?;
            let ms = time(cuda, 5, || {
                Ok(cuda.pairwise_similarity_backward_into(plan, &mut ga, &mut gb, &a, &b, &g)?)
            })?;
            // Inverse norms, and for the half types one f32 W of the larger set.
            let w = if T::NAME == "f32" { 0 } else { 4 * n * d };
            let extra = 4 * (plan.a_vectors() + plan.b_vectors()) + w;
            r.add(name, T::NAME, ms, flops, extra, reference, blas_ms);
        }
        Ok(())
    }
    run::<f32>(
        r,
        cuda,
        blas,
        &[
            (&plan, case.to_string(), "cuBLAS SGEMM ×2", false),
            (&fast, format!("{case} fast"), "cuBLAS TF32 GEMM ×2", true),
        ],
        (n, d, flops),
    )?;
    run::<bf16>(
        r,
        cuda,
        blas,
        &[(&fast, format!("{case} fast"), "cuBLAS bf16 GEMM ×2", false)],
        (n, d, flops),
    )
}

fn set_math(blas: &CudaBlas, tf32: bool) -> anyhow::Result<()> {
    let mode = if tf32 {
        blas_sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH
    } else {
        blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH
    };
    // SAFETY: the handle is alive (owned by `blas`); this only sets its math mode.
    let status = unsafe { blas_sys::cublasSetMathMode(*blas.handle(), mode) };
    anyhow::ensure!(
        status == blas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS,
        "cublasSetMathMode: {status:?}"
    );
    Ok(())
}

/// The GPU targets, in one run (empty without a usable GPU).
pub fn section() -> anyhow::Result<Vec<GpuRow>> {
    let cuda = match Cuda::new(0) {
        Ok(c) => c,
        Err(e) => {
            println!("GPU section skipped: {e}");
            return Ok(Vec::new());
        }
    };
    println!("GPU: {}", cuda.describe()?);
    let mut r = Report { rows: Vec::new() };
    let blas = CudaBlas::new(cuda.stream().clone())?;
    let torch = "PyTorch (SPEC §5, same GPU model)";

    // Full matrix and fused top-10, 65536 × 65536 × 768.
    let (n, d) = (65536usize, 768usize);
    let flops = 2.0 * (n * n * d) as f64;
    let plan = PairPlan::new(&[n, d], Layout::Rows, &[n, d], Layout::Rows)?;
    let fast = plan.clone().precision(Precision::Fast);
    {
        let a = random::<f32>(&cuda, n * d, 1)?;
        let b = random::<f32>(&cuda, n * d, 2)?;
        let mut c = cuda.stream().alloc_zeros::<f32>(n * n)?;
        let case = "matrix 65536×65536×768";
        set_math(&blas, false)?;
        let sgemm = time(&cuda, 5, || cublas_nt(&blas, n, n, d, &a, &b, &mut c))?;
        let ours = time(&cuda, 5, || {
            Ok(cuda
                .pairwise_similarity_into(&plan, &mut c, &a, &b)
                .map(drop)?)
        })?;
        r.add(
            case,
            "f32",
            ours,
            flops,
            extra(&cuda, &plan, "matrix", 0),
            "cuBLAS SGEMM",
            sgemm,
        );
        r.add(
            case,
            "f32",
            ours,
            flops,
            extra(&cuda, &plan, "matrix", 0),
            torch,
            TORCH_MATRIX_MS,
        );
        set_math(&blas, true)?;
        let tf32 = time(&cuda, 5, || cublas_nt(&blas, n, n, d, &a, &b, &mut c))?;
        set_math(&blas, false)?;
        let ours = time(&cuda, 5, || {
            Ok(cuda
                .pairwise_similarity_into(&fast, &mut c, &a, &b)
                .map(drop)?)
        })?;
        r.add(
            &format!("{case} fast"),
            "f32",
            ours,
            flops,
            extra(&cuda, &fast, "matrix", 0),
            "cuBLAS TF32 GEMM",
            tf32,
        );
        drop(c);
        let case = "top-10 65536×65536×768";
        for (p, name, anchor) in [
            (&plan, case.to_string(), TORCH_TOP10_MS[0]),
            (&fast, format!("{case} fast"), TORCH_TOP10_MS[1]),
        ] {
            top10(&mut r, &cuda, p, (&a, &b), &name, flops, torch, anchor)?;
        }
    }
    {
        let a = random::<bf16>(&cuda, n * d, 3)?;
        let b = random::<bf16>(&cuda, n * d, 4)?;
        let mut c = cuda.stream().alloc_zeros::<bf16>(n * n)?;
        let gemm = time(&cuda, 5, || cublas_nt(&blas, n, n, d, &a, &b, &mut c))?;
        let ours = time(&cuda, 5, || {
            Ok(cuda
                .pairwise_similarity_into(&fast, &mut c, &a, &b)
                .map(drop)?)
        })?;
        r.add(
            "matrix 65536×65536×768 fast",
            "bf16",
            ours,
            flops,
            extra(&cuda, &fast, "matrix", 0),
            "cuBLAS bf16 GEMM",
            gemm,
        );
        drop(c);
        top10(
            &mut r,
            &cuda,
            &fast,
            (&a, &b),
            "top-10 65536×65536×768 fast",
            flops,
            torch,
            TORCH_TOP10_MS[2],
        )?;
    }

    backward_cases(&mut r, &cuda, &blas)?;

    // Retrieval: top-10 of 1024 queries among a million keys, 1024 × 1048576 × 768. Eight
    // blocks of rows: the columns are split into segments to fill the GPU. The reference is
    // cuBLAS computing just the product (4 GiB) in the same run.
    {
        let (n, m, d) = (1024usize, 1usize << 20, 768usize);
        let plan = PairPlan::new(&[n, d], Layout::Rows, &[m, d], Layout::Rows)?;
        let fast = plan.clone().precision(Precision::Fast);
        let flops = 2.0 * (n * m * d) as f64;
        let a = random::<f32>(&cuda, n * d, 11)?;
        let b = random::<f32>(&cuda, m * d, 12)?;
        let mut c = cuda.stream().alloc_zeros::<f32>(n * m)?;
        let case = "top-10 1024×1048576×768";
        for (p, name, tf32, reference) in [
            (
                &plan,
                case.to_string(),
                false,
                "cuBLAS SGEMM (product only)",
            ),
            (
                &fast,
                format!("{case} fast"),
                true,
                "cuBLAS TF32 GEMM (product only)",
            ),
        ] {
            set_math(&blas, tf32)?;
            let gemm = time(&cuda, 5, || cublas_nt(&blas, n, m, d, &a, &b, &mut c))?;
            top10(&mut r, &cuda, p, (&a, &b), &name, flops, reference, gemm)?;
        }
        set_math(&blas, false)?;
    }

    // The seed's bmm: [8, 768, 4096] maps in column layout → [8, 4096, 4096].
    {
        let (bsz, d, n) = (8usize, 768usize, 4096usize);
        let plan = PairPlan::new(&[bsz, d, n], Layout::Cols, &[bsz, d, n], Layout::Cols)?;
        let a = random::<f32>(&cuda, bsz * d * n, 5)?;
        let b = random::<f32>(&cuda, bsz * d * n, 6)?;
        let mut c = cuda.stream().alloc_zeros::<f32>(bsz * n * n)?;
        let ms = time(&cuda, 20, || {
            Ok(cuda
                .pairwise_similarity_into(&plan, &mut c, &a, &b)
                .map(drop)?)
        })?;
        let flops = 2.0 * (bsz * n * n * d) as f64;
        r.add(
            "seed bmm [8,768,4096] pair (cols)",
            "f32",
            ms,
            flops,
            extra(&cuda, &plan, "matrix", 0),
            torch,
            TORCH_BMM_MS,
        );
    }

    // Set similarity of two (200·52) × 784 token sets.
    {
        let (n, d) = (200 * 52usize, 784usize);
        let plan = PairPlan::new(&[n, d], Layout::Rows, &[n, d], Layout::Rows)?;
        let a = random::<f32>(&cuda, n * d, 7)?;
        let b = random::<f32>(&cuda, n * d, 8)?;
        let flops = 2.0 * (n * n * d) as f64;
        let ms = time(&cuda, 20, || {
            Ok(cuda.pairwise_mean(&plan, &a, &b).map(drop)?)
        })?;
        r.add(
            "set mean (200·52)×784 (identity)",
            "f32",
            ms,
            4.0 * (n * d) as f64,
            extra(&cuda, &plan, "mean", 0),
            torch,
            TORCH_SET_MS[0],
        );
        let ms = time(&cuda, 20, || {
            Ok(cuda.set_similarity(&plan, &a, &b, None, None).map(drop)?)
        })?;
        r.add(
            "set greedy (200·52)×784",
            "f32",
            ms,
            flops,
            extra(&cuda, &plan, "greedy", 0),
            torch,
            TORCH_SET_MS[1],
        );
        let fast = plan.clone().precision(Precision::Fast);
        let ms = time(&cuda, 20, || {
            Ok(cuda.set_similarity(&fast, &a, &b, None, None).map(drop)?)
        })?;
        r.add(
            "set greedy (200·52)×784 fast",
            "f32",
            ms,
            flops,
            extra(&cuda, &fast, "greedy", 0),
            torch,
            TORCH_SET_MS[1],
        );
    }
    Ok(r.rows)
}
