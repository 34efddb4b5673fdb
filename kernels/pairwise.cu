// Pairwise cosine S[b, i, j] = cos(a_i, b_j) between two sets of vectors, each stored as rows
// ([N, D]) or columns ([D, N]) of a matrix, optionally batched, never copied or normalised:
//  - norms: 1 / max(‖v‖, eps) per vector (0 for a zero vector with eps = 0), into scratch;
//  - a shared-memory tiled FFMA product (128×128 tiles, 8×8 per thread, double-buffered
//    k-slices) whose epilogue applies the inverse norms and either writes the matrix, keeps
//    per-row argmax / row and column maxima (64/32-bit atomicMax on order-preserving keys),
//    or, sweeping all column tiles of its 128 rows, keeps a per-row top-k list;
//  - finish kernels that turn keys into values and indices, and set scores;
//  - the mean identities mean_ij S = <mean_i â_i, mean_j b̂_j> (colsum + dot / rowdot).
// The semantics (inverse norms, ranking order, F1) are those of src/pairwise.rs.

#include "tiles.cuh"

namespace cosim {
namespace pair {

// Candidates a row can queue per round of the top-k epilogue.
constexpr int QUEUE = 16;

// A 32-bit key whose unsigned order is the ranking order of src/pairwise.rs `outranks` on
// values: larger first, NaN above +inf, -0 equal to +0.
__device__ __forceinline__ uint32_t order_key(float s) {
    if (isnan(s)) return 0xffc00000u;
    if (s == 0.0f) s = 0.0f;
    const uint32_t u = __float_as_uint(s);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The value a key was made from (NaN canonical).
__device__ __forceinline__ float key_value(uint32_t k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// Value key and column in one 64-bit key: equal values rank the lower column first. Every
// real key is above 0, the "empty" key.
__device__ __forceinline__ unsigned long long rank_key(float s, int64_t col) {
    return ((unsigned long long)order_key(s) << 32) | (FULL - (uint32_t)col);
}

// Writes rank key c's value and column to values[i] and indices[i] (rank_key undone).
template <typename T>
__device__ __forceinline__ void put_key(unsigned long long c, T* values, uint32_t* indices,
                                        int64_t i) {
    values[i] = from_acc<T>(key_value((uint32_t)(c >> 32)));
    indices[i] = FULL - (uint32_t)c;
}

// clamp(dot · inv_a · inv_b) to [-1, 1] keeping NaN; 0 when the dot is 0.
__device__ __forceinline__ float score(float dot, float ia, float ib) {
    if (dot == 0.0f) return 0.0f;
    const float r = dot * ia * ib;
    return r > 1.0f ? 1.0f : (r < -1.0f ? -1.0f : r);
}

// Inserts key c into the descending list L[0..k) (c above L[k-1]; all keys distinct), the
// whole warp cooperating: count the entries above c, shift the rest down one from the end,
// write c. Returns the new last entry.
__device__ __forceinline__ unsigned long long list_insert(unsigned long long* L, int64_t k,
                                                          unsigned long long c, int lane) {
    int64_t pos = 0;
    for (int64_t base = 0; base < k; base += 32) {
        const int64_t i = base + lane;
        const unsigned m = __ballot_sync(FULL, i < k && L[i] > c);
        pos += __popc(m);
        if (m != FULL) break;
    }
    const int64_t hi = k - 2;  // entries pos..hi move to pos+1..hi+1; entry k-1 drops out
    if (hi >= pos) {
        for (int64_t base = (hi / 32) * 32; base + 32 > pos; base -= 32) {
            const int64_t i = base + lane;
            const bool mv = i >= pos && i <= hi;
            const unsigned long long v = mv ? L[i] : 0ull;
            __syncwarp();
            if (mv) L[i + 1] = v;
            __syncwarp();
        }
    }
    if (lane == 0) L[pos] = c;
    __syncwarp();
    return L[k - 1];
}


}  // namespace pair

using namespace pair;
using namespace pair;

// The matrix: out[bb][row - row0][col] for rows [row0, row0 + rows); grid (col tiles, row
// tiles, batch).
template <typename T, bool AC, bool BC, bool TC>
__device__ void pair_matrix(const cosim_pair_params& p, const T* a, const T* b,
                            const float* inv_a, const float* inv_b, T* out) {
    __shared__ __align__(128) unsigned char raw[tile_smem<T>()];
    const int64_t bb = blockIdx.z;
    const int64_t row0 = p.row0 + (int64_t)blockIdx.y * BM, col0 = (int64_t)blockIdx.x * BN;
    float acc[TM][TN];
    dots<T, AC, BC, TC>(p, a + bb * p.a.batch_stride, b + bb * p.b.batch_stride, row0, col0, acc, raw);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int64_t m = p.b.count, end = p.row0 + p.rows;
    const float* ia = inv_a + inv_base(p.a, bb);
    const float* ib = inv_b + inv_base(p.b, bb);
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int64_t row = row0 + ty * TM + i;
        if (row >= end) break;
        const float ra = ia[row];
        T* o = out + (bb * p.rows + (row - p.row0)) * m;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int64_t col = col0 + tx * TN + j;
            if (col < m) o[col] = from_acc<T>(score(acc[i][j], ra, ib[col]));
        }
    }
}

// Row argmax: best[bb·n + row] = max over columns of rank_key (atomicMax; zeroed before).
template <typename T, bool AC, bool BC, bool TC>
__device__ void pair_argmax(const cosim_pair_params& p, const T* a, const T* b,
                            const float* inv_a, const float* inv_b, unsigned long long* best) {
    __shared__ __align__(128) unsigned char raw[tile_smem<T>()];
    const int64_t bb = blockIdx.z;
    const int64_t row0 = p.row0 + (int64_t)blockIdx.y * BM, col0 = (int64_t)blockIdx.x * BN;
    float acc[TM][TN];
    dots<T, AC, BC, TC>(p, a + bb * p.a.batch_stride, b + bb * p.b.batch_stride, row0, col0, acc, raw);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int64_t m = p.b.count, end = p.row0 + p.rows;
    const float* ia = inv_a + inv_base(p.a, bb);
    const float* ib = inv_b + inv_base(p.b, bb);
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int64_t row = row0 + ty * TM + i;
        const bool live = row < end;
        const float ra = live ? ia[row] : 0.0f;
        unsigned long long k = 0;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int64_t col = col0 + tx * TN + j;
            if (live && col < m) {
                const unsigned long long c = rank_key(score(acc[i][j], ra, ib[col]), col);
                k = c > k ? c : k;
            }
        }
        // The 16 lanes of one ty hold the row's 128 columns.
#pragma unroll
        for (int o = 8; o > 0; o /= 2) {
            const unsigned long long x = __shfl_xor_sync(FULL, k, o);
            k = x > k ? x : k;
        }
        if (live && tx == 0 && k != 0) atomicMax(&best[bb * p.a.count + row], k);
    }
}

// Greedy matching: row and column maxima of the similarity as order keys (atomicMax; zeroed
// before): rowmax[bb·n + row], colmax[bb·m + col].
template <typename T, bool AC, bool BC, bool TC>
__device__ void pair_greedy(const cosim_pair_params& p, const T* a, const T* b,
                            const float* inv_a, const float* inv_b, unsigned* rowmax,
                            unsigned* colmax) {
    __shared__ __align__(128) unsigned char raw[tile_smem<T>()];
    const int64_t bb = blockIdx.z;
    const int64_t row0 = p.row0 + (int64_t)blockIdx.y * BM, col0 = (int64_t)blockIdx.x * BN;
    float acc[TM][TN];
    dots<T, AC, BC, TC>(p, a + bb * p.a.batch_stride, b + bb * p.b.batch_stride, row0, col0, acc, raw);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16, lane = threadIdx.x % 32;
    const int64_t m = p.b.count, end = p.row0 + p.rows;
    const float* ia = inv_a + inv_base(p.a, bb);
    const float* ib = inv_b + inv_base(p.b, bb);
    unsigned colk[TN];
#pragma unroll
    for (int j = 0; j < TN; ++j) colk[j] = 0;
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int64_t row = row0 + ty * TM + i;
        const bool live = row < end;
        const float ra = live ? ia[row] : 0.0f;
        unsigned k = 0;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int64_t col = col0 + tx * TN + j;
            if (live && col < m) {
                const unsigned c = order_key(score(acc[i][j], ra, ib[col]));
                k = max(k, c);
                colk[j] = max(colk[j], c);
            }
        }
#pragma unroll
        for (int o = 8; o > 0; o /= 2) k = max(k, __shfl_xor_sync(FULL, k, o));
        if (live && tx == 0 && k != 0) atomicMax(&rowmax[bb * p.a.count + row], k);
    }
    // The two ty of a warp hold 16 rows of the same columns.
#pragma unroll
    for (int j = 0; j < TN; ++j) {
        const unsigned c = max(colk[j], __shfl_xor_sync(FULL, colk[j], 16));
        const int64_t col = col0 + tx * TN + j;
        if (lane < 16 && col < m && c != 0) atomicMax(&colmax[bb * m + col], c);
    }
}

// Top-k per row: each block owns 128 rows and sweeps the column tiles of its segment
// (blockIdx.z: columns [z·col_span, (z+1)·col_span), col_span a multiple of BN; one segment
// of all columns when unsplit), keeping each row's k best keys of the segment sorted in
// lists[((z·batch + bb)·rows + row - row0)·k ..] (zeroed before; gridDim.y = batch). Per
// tile, rounds of: every thread queues its elements above the row's threshold (the list's
// last key) in shared memory, then one warp per row inserts the queued keys; until nothing
// is pending. With more than one segment, pair_topk_merge combines the lists.
template <typename T, bool AC, bool BC, bool TC>
__device__ void pair_topk(const cosim_pair_params& p, const T* a, const T* b,
                          const float* inv_a, const float* inv_b, unsigned long long* lists,
                          int64_t col_span) {
    __shared__ __align__(128) unsigned char raw[tile_smem<T>()];
    __shared__ unsigned long long queue[BM][QUEUE];
    __shared__ unsigned long long thr[BM];
    __shared__ int queued[BM];
    const int64_t bb = blockIdx.y;
    const int64_t row0 = p.row0 + (int64_t)blockIdx.x * BM;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t end = p.row0 + p.rows, k = p.k;
    const int64_t first = (int64_t)blockIdx.z * col_span;
    const int64_t m = min(p.b.count, first + col_span);  // this segment's end column
    lists += (int64_t)blockIdx.z * gridDim.y * p.rows * k;
    const T* pa = a + bb * p.a.batch_stride;
    const T* pb = b + bb * p.b.batch_stride;
    const float* ia = inv_a + inv_base(p.a, bb);
    const float* ib = inv_b + inv_base(p.b, bb);
    if (threadIdx.x < BM) {
        thr[threadIdx.x] = 0;
        queued[threadIdx.x] = 0;
    }
    __syncthreads();  // dots() need not sync (d = 0 skips its loop)
    float ra[TM];
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int64_t row = row0 + ty * TM + i;
        ra[i] = row < end ? ia[row] : 0.0f;
    }
    float acc[TM][TN];
    for (int64_t col0 = first; col0 < m; col0 += BN) {
        dots<T, AC, BC, TC>(p, pa, pb, row0, col0, acc, raw);
        // Bit i·8 + j: element (i, j) of this thread may still enter its row's list.
        unsigned long long pending = 0;
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j)
                if (row0 + ty * TM + i < end && col0 + tx * TN + j < m)
                    pending |= 1ull << (i * TN + j);
        while (true) {
            if (pending != 0) {
#pragma unroll
                for (int i = 0; i < TM; ++i) {
                    const int rl = ty * TM + i;
#pragma unroll
                    for (int j = 0; j < TN; ++j) {
                        const unsigned long long bit = 1ull << (i * TN + j);
                        if (!(pending & bit)) continue;
                        const int64_t col = col0 + tx * TN + j;
                        const unsigned long long c =
                            rank_key(score(acc[i][j], ra[i], ib[col]), col);
                        if (c <= thr[rl]) {
                            pending &= ~bit;
                            continue;
                        }
                        const int slot = atomicAdd(&queued[rl], 1);
                        if (slot < QUEUE) {
                            queue[rl][slot] = c;
                            pending &= ~bit;
                        }
                    }
                }
            }
            __syncthreads();
            for (int rl = warp; rl < BM; rl += THREADS / 32) {
                const int n = min(queued[rl], QUEUE);
                if (n == 0) continue;
                unsigned long long* L = lists + (bb * p.rows + (row0 + rl - p.row0)) * k;
                unsigned long long t = thr[rl];
                for (int q = 0; q < n; ++q) {
                    const unsigned long long c = queue[rl][q];
                    if (c > t) t = list_insert(L, k, c, lane);
                }
                __syncwarp();
                if (lane == 0) {
                    thr[rl] = t;
                    queued[rl] = 0;
                }
            }
            if (!__syncthreads_or(pending != 0)) break;
        }
    }
}

// Merges the `splits` (≤ 32) sorted lists of each of `rows` rows, list s of row r at
// lists[(s·rows + r)·k ..], into the row's k best, written as values and column indices
// [r·k ..]. One warp per row: lane s holds list s's head; k times, the largest head (keys
// are distinct but for the empty key 0, which loses every tie to a lower lane) is written
// and its lane moves on. The lists hold min(k, segment width) keys each and k ≤ the columns,
// so no empty key is ever written.
template <typename T>
__device__ void pair_topk_merge(int64_t rows, int64_t k, int32_t splits,
                                const unsigned long long* lists, T* values, uint32_t* indices) {
    const int lane = threadIdx.x % 32;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
    for (int64_t r = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32; r < rows;
         r += warps) {
        const unsigned long long* L = lane < splits ? lists + (lane * rows + r) * k : nullptr;
        int64_t h = 0;
        unsigned long long head = L ? L[0] : 0ull;
        for (int64_t i = 0; i < k; ++i) {
            unsigned long long best = head;
            int who = lane;
            for (int o = 16; o > 0; o /= 2) {
                const unsigned long long b = __shfl_xor_sync(FULL, best, o);
                const int w = __shfl_xor_sync(FULL, who, o);
                if (b > best || (b == best && w < who)) best = b, who = w;
            }
            if (lane == who) {
                put_key(best, values, indices, r * k + i);
                ++h;
                head = L && h < k ? L[h] : 0ull;
            }
        }
    }
}

// Keys → values and column indices, for `count` keys.
template <typename T>
__device__ void pair_keys_finish(int64_t count, const unsigned long long* keys, T* values,
                                 uint32_t* indices) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < count;
         i += (int64_t)gridDim.x * blockDim.x) {
        put_key(keys[i], values, indices, i);
    }
}

// Block-wide sum of a double (every thread gets it). `scratch` holds 32 doubles.
__device__ __forceinline__ double block_total(double v, double* scratch) {
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(FULL, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x / 32) ? scratch[lane] : 0.0;
    for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

// Weighted mean of the maxima of `count` vectors of one batch (weights null: all 1).
template <typename T>
__device__ __forceinline__ double weighted_max_mean(const unsigned* keys, const T* w,
                                                    int64_t count, double* scratch) {
    double num = 0.0, den = 0.0;
    for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
        const double wi = w ? (double)to_acc(w[i]) : 1.0;
        num += wi * (double)key_value(keys[i]);
        den += wi;
    }
    num = block_total(num, scratch);
    den = block_total(den, scratch);
    return num / den;
}

// Set scores of batch blockIdx.x from the row and column maxima: precision, recall, F1.
template <typename T>
__device__ void pair_greedy_finish(const cosim_pair_params& p, const unsigned* rowmax,
                                   const unsigned* colmax, const T* wa, const T* wb,
                                   T* precision, T* recall, T* f1) {
    __shared__ double scratch[32];
    const int64_t bb = blockIdx.x, n = p.a.count, m = p.b.count;
    const double P = weighted_max_mean(rowmax + bb * n, wa ? wa + inv_base(p.a, bb) : wa, n,
                                       scratch);
    const double R = weighted_max_mean(colmax + bb * m, wb ? wb + inv_base(p.b, bb) : wb, m,
                                       scratch);
    if (threadIdx.x == 0) {
        precision[bb] = from_acc<T>((float)P);
        recall[bb] = from_acc<T>((float)R);
        f1[bb] = from_acc<T>((float)(P + R == 0.0 ? 0.0 : 2.0 * P * R / (P + R)));
    }
}

// inv[v] = 1 / max(‖x_v‖, eps) (0 when that is 0) for the vectors of `batches` batches of a
// set: a warp per vector for rows, a thread per vector for columns (coalesced either way).
template <typename T>
__device__ void pair_norms(cosim_pair_set s, int64_t d, int64_t batches, double eps,
                           const T* x, float* inv) {
    const int64_t total = batches * s.count;
    const int64_t gtid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    const int64_t gstride = (int64_t)gridDim.x * blockDim.x;
    const float e = (float)eps;
    auto finish = [e](float nsq) {
        const float n = fmaxf(sqrtf(nsq), e);
        return n == 0.0f ? 0.0f : 1.0f / n;
    };
    if (!s.cols) {
        const int lane = threadIdx.x % 32;
        for (int64_t v = gtid / 32; v < total; v += gstride / 32) {
            const T* p = x + (v / s.count) * s.batch_stride + (v % s.count) * s.vec_stride;
            float nsq = 0.0f;
            for (int64_t k = lane; k < d; k += 32) {
                const float y = to_acc(p[k]);
                nsq = fmaf(y, y, nsq);
            }
            for (int o = 16; o > 0; o /= 2) nsq += __shfl_xor_sync(FULL, nsq, o);
            if (lane == 0) inv[v] = finish(nsq);
        }
    } else {
        for (int64_t v = gtid; v < total; v += gstride) {
            const T* p = x + (v / s.count) * s.batch_stride + (v % s.count);
            float nsq = 0.0f;
            for (int64_t k = 0; k < d; ++k) {
                const float y = to_acc(p[k * s.comp_stride]);
                nsq = fmaf(y, y, nsq);
            }
            inv[v] = finish(nsq);
        }
    }
}

// u[bb·d + k] += Σ_{v in this block's 128 vectors} inv[v]·x_v[k] / count: the mean of the
// normalised vectors of each batch (u zeroed before; grid (vector chunks, batches)).
template <typename T>
__device__ void pair_colsum(cosim_pair_set s, int64_t d, const T* x, const float* inv,
                            float* u) {
    const int64_t bb = blockIdx.y, v0 = (int64_t)blockIdx.x * 128;
    const int64_t v1 = min(v0 + 128, s.count);
    const float scale = 1.0f / (float)s.count;
    const T* base = x + bb * s.batch_stride;
    const float* w = inv + bb * s.count;
    if (!s.cols) {
        for (int64_t k = threadIdx.x; k < d; k += blockDim.x) {
            float acc = 0.0f;
            for (int64_t v = v0; v < v1; ++v) acc = fmaf(w[v], to_acc(base[v * s.vec_stride + k]), acc);
            atomicAdd(&u[bb * d + k], acc * scale);
        }
    } else {
        const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
        for (int64_t k = warp; k < d; k += blockDim.x / 32) {
            float acc = 0.0f;
            for (int64_t v = v0 + lane; v < v1; v += 32)
                acc = fmaf(w[v], to_acc(base[k * s.comp_stride + v]), acc);
            for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(FULL, acc, o);
            if (lane == 0) atomicAdd(&u[bb * d + k], acc * scale);
        }
    }
}

__device__ __forceinline__ float clamp_unit(float r) {
    return r > 1.0f ? 1.0f : (r < -1.0f ? -1.0f : r);
}

// Row means: out[bb·n + i] = clamp(inv_a[i] · <a_i, ub[bb]>), ub the mean normalised vector
// of b (one per batch, or one shared when `ub_batched` is 0).
template <typename T>
__device__ void pair_rowdot(const cosim_pair_params& p, const T* a, const float* inv_a,
                            const float* ub, int32_t ub_batched, T* out) {
    const int64_t n = p.a.count, d = p.d, total = p.batch * n;
    const int64_t gtid = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    const int64_t gstride = (int64_t)gridDim.x * blockDim.x;
    if (!p.a.cols) {
        const int lane = threadIdx.x % 32;
        for (int64_t r = gtid / 32; r < total; r += gstride / 32) {
            const int64_t bb = r / n, i = r % n;
            const T* x = a + bb * p.a.batch_stride + i * p.a.vec_stride;
            const float* u = ub + (ub_batched ? bb * d : 0);
            float acc = 0.0f;
            for (int64_t k = lane; k < d; k += 32) acc = fmaf(to_acc(x[k]), u[k], acc);
            for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(FULL, acc, o);
            if (lane == 0) out[r] = from_acc<T>(clamp_unit(acc * inv_a[inv_base(p.a, bb) + i]));
        }
    } else {
        for (int64_t r = gtid; r < total; r += gstride) {
            const int64_t bb = r / n, i = r % n;
            const T* x = a + bb * p.a.batch_stride + i;
            const float* u = ub + (ub_batched ? bb * d : 0);
            float acc = 0.0f;
            for (int64_t k = 0; k < d; ++k) acc = fmaf(to_acc(x[k * p.a.comp_stride]), u[k], acc);
            out[r] = from_acc<T>(clamp_unit(acc * inv_a[inv_base(p.a, bb) + i]));
        }
    }
}

// Whole-matrix means: out[bb] = clamp(<ua[bb], ub[bb]>), one block per batch.
template <typename T>
__device__ void pair_meandot(int64_t d, const float* ua, int32_t ua_batched, const float* ub,
                             int32_t ub_batched, T* out) {
    __shared__ double scratch[32];
    const int64_t bb = blockIdx.x;
    const float* x = ua + (ua_batched ? bb * d : 0);
    const float* y = ub + (ub_batched ? bb * d : 0);
    double acc = 0.0;
    for (int64_t k = threadIdx.x; k < d; k += blockDim.x) acc += (double)x[k] * (double)y[k];
    acc = block_total(acc, scratch);
    if (threadIdx.x == 0) out[bb] = from_acc<T>(clamp_unit((float)acc));
}

}  // namespace cosim

using namespace cosim;

// The product kernels, for one element type, the two sets' layouts (r: rows, c: columns)
// and the arithmetic (suffix "": FFMA, "_tc": tensor cores).
#define PAIR_PRODUCT_KERNELS(T, NAME, AC, BC, L, TC, SUF)                                      \
    extern "C" __global__ void __launch_bounds__(THREADS, 1)                                   \
        cosim_pair_matrix_##NAME##_##L##SUF(cosim_pair_params p, const T* a, const T* b,       \
                                            const float* inv_a, const float* inv_b, T* out) {  \
        pair_matrix<T, AC, BC, TC>(p, a, b, inv_a, inv_b, out);                                \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(THREADS, 1)                                   \
        cosim_pair_argmax_##NAME##_##L##SUF(cosim_pair_params p, const T* a, const T* b,       \
                                            const float* inv_a, const float* inv_b,            \
                                            unsigned long long* best) {                        \
        pair_argmax<T, AC, BC, TC>(p, a, b, inv_a, inv_b, best);                               \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(THREADS, 1)                                   \
        cosim_pair_greedy_##NAME##_##L##SUF(cosim_pair_params p, const T* a, const T* b,       \
                                            const float* inv_a, const float* inv_b,            \
                                            unsigned* rowmax, unsigned* colmax) {              \
        pair_greedy<T, AC, BC, TC>(p, a, b, inv_a, inv_b, rowmax, colmax);                     \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(THREADS, 1)                                   \
        cosim_pair_topk_##NAME##_##L##SUF(cosim_pair_params p, const T* a, const T* b,         \
                                          const float* inv_a, const float* inv_b,              \
                                          unsigned long long* lists, int64_t col_span) {       \
        pair_topk<T, AC, BC, TC>(p, a, b, inv_a, inv_b, lists, col_span);                      \
    }

#define PAIR_LAYOUT_KERNELS(T, NAME, TC, SUF)                                                  \
    PAIR_PRODUCT_KERNELS(T, NAME, false, false, rr, TC, SUF)                                   \
    PAIR_PRODUCT_KERNELS(T, NAME, false, true, rc, TC, SUF)                                    \
    PAIR_PRODUCT_KERNELS(T, NAME, true, false, cr, TC, SUF)                                    \
    PAIR_PRODUCT_KERNELS(T, NAME, true, true, cc, TC, SUF)

#if COSIM_TENSOR_CORES
#define PAIR_TC_KERNELS(T, NAME) PAIR_LAYOUT_KERNELS(T, NAME, true, _tc)
#else
#define PAIR_TC_KERNELS(T, NAME)
#endif

// The kernels of one element type.
#define PAIR_KERNELS(T, NAME)                                                                  \
    PAIR_LAYOUT_KERNELS(T, NAME, false, )                                                      \
    PAIR_TC_KERNELS(T, NAME)                                                                   \
    extern "C" __global__ void cosim_pair_keys_finish_##NAME(                                  \
        int64_t count, const unsigned long long* keys, T* values, uint32_t* indices) {         \
        pair_keys_finish<T>(count, keys, values, indices);                                     \
    }                                                                                          \
    extern "C" __global__ void cosim_pair_topk_merge_##NAME(                                   \
        int64_t rows, int64_t k, int32_t splits, const unsigned long long* lists, T* values,   \
        uint32_t* indices) {                                                                   \
        pair_topk_merge<T>(rows, k, splits, lists, values, indices);                           \
    }                                                                                          \
    extern "C" __global__ void cosim_pair_greedy_finish_##NAME(                                \
        cosim_pair_params p, const unsigned* rowmax, const unsigned* colmax, const T* wa,      \
        const T* wb, T* precision, T* recall, T* f1) {                                         \
        pair_greedy_finish<T>(p, rowmax, colmax, wa, wb, precision, recall, f1);               \
    }                                                                                          \
    extern "C" __global__ void cosim_pair_norms_##NAME(cosim_pair_set s, int64_t d,            \
                                                       int64_t batches, double eps,            \
                                                       const T* x, float* inv) {               \
        pair_norms<T>(s, d, batches, eps, x, inv);                                             \
    }                                                                                          \
    extern "C" __global__ void cosim_pair_colsum_##NAME(cosim_pair_set s, int64_t d,           \
                                                        const T* x, const float* inv,          \
                                                        float* u) {                            \
        pair_colsum<T>(s, d, x, inv, u);                                                       \
    }                                                                                          \
    extern "C" __global__ void cosim_pair_rowdot_##NAME(cosim_pair_params p, const T* a,       \
                                                        const float* inv_a, const float* ub,   \
                                                        int32_t ub_batched, T* out) {          \
        pair_rowdot<T>(p, a, inv_a, ub, ub_batched, out);                                      \
    }                                                                                          \
    extern "C" __global__ void cosim_pair_meandot_##NAME(int64_t d, const float* ua,           \
                                                         int32_t ua_batched, const float* ub,  \
                                                         int32_t ub_batched, T* out) {         \
        pair_meandot<T>(d, ua, ua_batched, ub, ub_batched, out);                               \
    }

PAIR_KERNELS(float, f32)
PAIR_KERNELS(__half, f16)
PAIR_KERNELS(__nv_bfloat16, bf16)
