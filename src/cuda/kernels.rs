//! The embedded kernel fatbins and the per-context module cache: each module is loaded once
//! per CUDA context, and each function looked up once.

use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Kernel families, each one fatbin compiled from `kernels/<family>.cu` by build.rs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Along,
    Rows,
    Pairwise,
    Backward,
    PairBackward,
}

#[cfg(cosim_kernels)]
fn image(family: Family) -> Option<&'static [u8]> {
    Some(match family {
        Family::Along => include_bytes!(concat!(env!("OUT_DIR"), "/along.fatbin")),
        Family::Rows => include_bytes!(concat!(env!("OUT_DIR"), "/rows.fatbin")),
        Family::Pairwise => include_bytes!(concat!(env!("OUT_DIR"), "/pairwise.fatbin")),
        Family::Backward => include_bytes!(concat!(env!("OUT_DIR"), "/backward.fatbin")),
        Family::PairBackward => {
            include_bytes!(concat!(env!("OUT_DIR"), "/pair_backward.fatbin"))
        }
    })
}

#[cfg(not(cosim_kernels))]
fn image(_family: Family) -> Option<&'static [u8]> {
    None
}

/// Whether this build holds the kernels (nvcc was found at build time).
pub fn built() -> bool {
    cfg!(cosim_kernels)
}

/// How this build's kernels were made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelBuild {
    /// The nvcc that compiled them, with its version line.
    pub nvcc: &'static str,
    /// The CUDA release of that nvcc ("13.0"). A driver of an older major CUDA version does
    /// not load the kernels; within one major version any driver does.
    pub cuda: &'static str,
    /// The architectures the fatbins hold code for.
    pub archs: &'static str,
}

/// How the kernels were built, or `None` for a build without them (nvcc not found).
pub fn build_info() -> Option<KernelBuild> {
    #[cfg(cosim_kernels)]
    {
        Some(KernelBuild {
            nvcc: env!("COSIM_NVCC"),
            cuda: env!("COSIM_KERNELS_CUDA"),
            archs: env!("COSIM_ARCHS"),
        })
    }
    #[cfg(not(cosim_kernels))]
    {
        None
    }
}

impl Family {
    /// The family's name, as its source file `kernels/<name>.cu` is named.
    pub fn name(self) -> &'static str {
        match self {
            Family::Along => "along",
            Family::Rows => "rows",
            Family::Pairwise => "pairwise",
            Family::Backward => "backward",
            Family::PairBackward => "pair_backward",
        }
    }
}

/// The loaded modules of one context, and the functions looked up so far.
pub struct Kernels {
    modules: HashMap<Family, Arc<CudaModule>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
}

impl Kernels {
    /// The kernels of `ctx`, loading the modules on first use in that context.
    pub fn for_context(ctx: &Arc<CudaContext>) -> Result<Arc<Kernels>> {
        // Weak on both sides: the handles own the kernels (and through the modules, the
        // context); the cache only finds them while some handle is alive.
        type Cache = Mutex<Vec<(Weak<CudaContext>, Weak<Kernels>)>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut entries = cache.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|(c, k)| c.strong_count() > 0 && k.strong_count() > 0);
        if let Some(k) = entries.iter().find_map(|(c, k)| {
            let same = c.upgrade().is_some_and(|c| Arc::ptr_eq(&c, ctx));
            same.then(|| k.upgrade()).flatten()
        }) {
            return Ok(k);
        }
        let mut modules = HashMap::new();
        for family in [
            Family::Along,
            Family::Rows,
            Family::Pairwise,
            Family::Backward,
            Family::PairBackward,
        ] {
            let bytes = image(family).ok_or(Error::KernelsNotBuilt)?;
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(bytes.to_vec()))
                .map_err(|source| Error::KernelLoad {
                    family: family.name(),
                    kernels_cuda: build_info().map_or("unknown", |b| b.cuda),
                    driver_cuda: super::driver_version()
                        .map_or_else(|e| format!("unknown ({e})"), |(a, b)| format!("{a}.{b}")),
                    source,
                })?;
            modules.insert(family, module);
        }
        let k = Arc::new(Kernels {
            modules,
            functions: Mutex::new(HashMap::new()),
        });
        entries.push((Arc::downgrade(ctx), Arc::downgrade(&k)));
        Ok(k)
    }

    /// The kernel `name` of `family`.
    pub fn function(&self, family: Family, name: &str) -> Result<CudaFunction> {
        let mut functions = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = functions.get(name) {
            return Ok(f.clone());
        }
        let module = self.modules.get(&family).ok_or(Error::KernelsNotBuilt)?;
        let f = module.load_function(name)?;
        functions.insert(name.to_owned(), f.clone());
        Ok(f)
    }
}
