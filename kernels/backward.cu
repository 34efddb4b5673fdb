// Gradients of the along and per-channel similarities: one thread per output recomputes its
// vector pair's sums (as the forward), turns the upstream gradient into three coefficients,
// and writes both vectors' gradients: g1 = a·x2 + b1·x1, g2 = a·x1 + b2·x2 (src/cpu/backward.rs
// states the formula and its edge rules; both backends implement the same). Adjacent threads
// take adjacent outputs of the innermost kept axis, so strided reductions (dim=1 of NCHW) read
// and write coalesced. An input broadcast against the other gets its gradient summed with
// atomics into a zeroed accumulator buffer, cast to T after by cosim_backward_cast_*.
// With `grad_w` (the reweighting, `weighted = x2 · sim` per channel): the similarity's upstream
// gradient is `Σ_k grad_w·x2` (plus `grad`, the similarities' own, when given), and x2's
// gradient gets the direct term `grad_w · sim` (sim rounded to T, as the forward used it).

#include "common.cuh"

namespace cosim {

template <typename T>
__device__ __forceinline__ void backward(const cosim_along_params& p, const T* __restrict__ x1,
                                         const T* __restrict__ x2, const T* __restrict__ grad,
                                         const T* __restrict__ grad_w,
                                         T* __restrict__ g1, T* __restrict__ g2,
                                         acc_t<T>* __restrict__ sum1, acc_t<T>* __restrict__ sum2) {
    using A = acc_t<T>;
    const int64_t total = p.outer_count * p.inner;
    const A eps = (A)p.eps;
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += step) {
        const int64_t o = t / p.inner, i = t - o * p.inner;
        int64_t off1, off2;
        outer_offsets(p.outer, o, off1, off2);
        off1 += i * p.inner_stride1;
        off2 += i * p.inner_stride2;
        Sums<A> s = Sums<A>::zero();
        A gy = A(0);
        const T* gw = grad_w ? grad_w + t * p.reduce_len : nullptr;
        for (int64_t k = 0; k < p.reduce_len; ++k) {
            const A b = to_acc(x2[off2 + k * p.reduce_stride2]);
            s.add(to_acc(x1[off1 + k * p.reduce_stride1]), b);
            if (gw) gy = fma(to_acc(gw[k]), b, gy);
        }
        const A r1 = sqrt(s.n1), r2 = sqrt(s.n2);
        const A den = fmax(r1, eps) * fmax(r2, eps);
        const A g = gy + (grad ? to_acc(grad[t]) : A(0));
        const A sim = gw ? to_acc(from_acc<T>(finish(s, eps))) : A(0);
        A ca = A(0), cb1 = A(0), cb2 = A(0);
        if (den != A(0)) {
            const A cos = s.dot / den;
            if (cos != cos) {
                ca = cb1 = cb2 = cos;  // NaN in: NaN gradients for the pair
            } else {
                ca = g / den;
                if (r1 > eps) cb1 = -g * cos / s.n1;
                if (r2 > eps) cb2 = -g * cos / s.n2;
            }
        }
        for (int64_t k = 0; k < p.reduce_len; ++k) {
            const int64_t j1 = off1 + k * p.reduce_stride1, j2 = off2 + k * p.reduce_stride2;
            const A a = to_acc(x1[j1]), b = to_acc(x2[j2]);
            const A v1 = ca * b + cb1 * a;
            const A v2 = ca * a + cb2 * b + (gw ? to_acc(gw[k]) * sim : A(0));
            if (sum1) atomicAdd(sum1 + j1, v1); else g1[j1] = from_acc<T>(v1);
            if (sum2) atomicAdd(sum2 + j2, v2); else g2[j2] = from_acc<T>(v2);
        }
    }
}

template <typename T>
__device__ __forceinline__ void cast(const acc_t<T>* __restrict__ sum, T* __restrict__ g, int64_t n) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += step)
        g[j] = from_acc<T>(sum[j]);
}

}  // namespace cosim

#define COSIM_BACKWARD(NAME, T)                                                                  \
    extern "C" __global__ void cosim_backward_##NAME(                                            \
        cosim_along_params p, const T* x1, const T* x2, const T* grad, const T* grad_w, T* g1,    \
        T* g2, cosim::acc_t<T>* sum1, cosim::acc_t<T>* sum2) {                                    \
        cosim::backward<T>(p, x1, x2, grad, grad_w, g1, g2, sum1, sum2);                         \
    }                                                                                            \
    extern "C" __global__ void cosim_backward_cast_##NAME(const cosim::acc_t<T>* sum, T* g,      \
                                                          int64_t n) {                           \
        cosim::cast<T>(sum, g, n);                                                               \
    }

COSIM_BACKWARD(f32, float)
COSIM_BACKWARD(f64, double)
COSIM_BACKWARD(f16, __half)
COSIM_BACKWARD(bf16, __nv_bfloat16)
