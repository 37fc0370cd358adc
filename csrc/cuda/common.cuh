// Helpers shared by flexrec's CUDA kernels: input checks, warp/block reductions, the candidate dot
// product and logit rounding, the Gumbel-max sample of one row by one warp, DCG discounts.
//
// Every kernel accumulates in at::opmath_type<scalar_t> (float for bf16/half/float, double for
// double). Kernels that keep a row in shared memory accept K <= kMaxK (checked on the host).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <limits>
#include <string>

namespace flexrec {
namespace cuda {

// One block per row holds the row (and its discounts) in shared memory: 1024 doubles each.
constexpr int64_t kMaxK = 1024;
constexpr int kWarp = 32;

inline void check_cuda(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK(t.is_cuda(), op, " (CUDA kernel): ", name, " is on ", t.device(),
              "; move every input to the same CUDA device with .to('cuda')");
}

inline void check_k_limit(int64_t K, const char* op) {
  TORCH_CHECK(K >= 1, op, ": K = 0 candidates; a pool needs K >= 1");
  TORCH_CHECK(K <= kMaxK, op, " (CUDA kernel) supports K <= ", kMaxK, " candidates, got K = ", K,
              "; use FLEXREC_BACKEND=triton or ref for larger pools");
}

// Threads per block for a one-block-per-row kernel: whole warps, about one thread per candidate,
// at most 256.
inline int row_threads(int64_t K) {
  const int64_t warps = (std::min<int64_t>(K, 256) + kWarp - 1) / kWarp;
  return static_cast<int>(warps * kWarp);
}

// Reward modes, numbered as flexrec::RewardMode in csrc/cpu/common.h (not included here: that
// header is host-only C++ tuned for the CPU kernels).
enum class Mode : int { kCausal = 0, kNoncausal = 1, kIndependent = 2, kSequence = 3, kSuffix = 4 };

inline Mode parse_mode(c10::string_view name) {
  const std::string mode(name);
  if (mode == "causal") return Mode::kCausal;
  if (mode == "noncausal") return Mode::kNoncausal;
  if (mode == "independent") return Mode::kIndependent;
  if (mode == "sequence") return Mode::kSequence;
  if (mode == "suffix") return Mode::kSuffix;
  TORCH_CHECK(false, "unknown reward mode '", mode,
              "'; expected one of causal, noncausal, independent, sequence, suffix");
}

inline void check_gains(const at::Tensor& gains, const char* op) {
  TORCH_CHECK(gains.dim() == 2, op, ": gains must be 2-D (B, K), got ", gains.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(gains.scalar_type()), op, ": gains must be a floating tensor, got ",
              gains.scalar_type());
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over the block, returned to every thread. Every thread of the block must call it;
// blockDim.x must be a multiple of 32. `red` holds 32 values in shared memory.
template <typename T>
__device__ T block_sum(T v, T* red) {
  v = warp_sum(v);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int n_warps = blockDim.x / kWarp;
  __syncthreads();  // `red` may still be read by a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  T total = T(0);
  for (int w = 0; w < n_warps; ++w) total += red[w];  // same order in every thread: deterministic
  return total;
}

// One warp's dot product hidden_row . weight_row over H: the lanes stride over H (coalesced reads
// of one weight row), accumulate in acc_t, then a warp sum; every lane gets the result. Shared by
// candidate_logits and the fused decode_step, so that both sum in the same order and agree to the
// bit (as csrc/cpu/common.h's dot_product does for the CPU kernels).
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__device__ __forceinline__ acc_t warp_dot(const scalar_t* __restrict__ h,
                                          const scalar_t* __restrict__ w, int64_t H) {
  const int lane = threadIdx.x % kWarp;
  acc_t acc = acc_t(0);
  for (int64_t i = lane; i < H; i += kWarp) acc += static_cast<acc_t>(h[i]) * static_cast<acc_t>(w[i]);
  return warp_sum(acc);
}

// A candidate's logit as the reference computes it in low precision: the product rounded to the
// input dtype, then the bias (when there is one) added in acc_t and the sum rounded again.
// Shared by candidate_logits and the fused decode_step.
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
__device__ __forceinline__ scalar_t round_logit(acc_t dot, const scalar_t* __restrict__ bias,
                                                int64_t id) {
  scalar_t logit = static_cast<scalar_t>(dot);
  if (bias != nullptr) logit = static_cast<scalar_t>(static_cast<acc_t>(logit) + static_cast<acc_t>(bias[id]));
  return logit;
}

// d(p) = 1/log2(p+2) for 0-based p < n, 0 beyond; computed in double as the reference does.
template <typename acc_t>
__device__ __forceinline__ acc_t discount(int64_t p, int64_t n) {
  return p < n ? static_cast<acc_t>(1.0 / log2(static_cast<double>(p) + 2.0)) : acc_t(0);
}

// (max, sum of exp(x - max)) merged from two partial online-softmax states.
template <typename acc_t>
__device__ __forceinline__ void softmax_merge(acc_t& m, acc_t& s, acc_t m2, acc_t s2) {
  const acc_t m_new = max(m, m2);
  if (m_new == -std::numeric_limits<acc_t>::infinity()) {
    s = acc_t(0);
  } else {
    s = s * exp(m - m_new) + s2 * exp(m2 - m_new);
  }
  m = m_new;
}

// One warp samples one row: index = argmax_c (x(c) + gumbel(c)) (lowest index on ties; x(c) is
// -inf for used candidates), logprob = x(index) - logsumexp_c x(c). `x_of(c)` returns the masked,
// temperature-scaled logit; `gumbel_of(c)` the noise (0 when sampling greedily). Every lane gets
// the result.
template <typename acc_t, typename XFn, typename GFn>
__device__ void warp_pool_sample(int64_t K, XFn x_of, GFn gumbel_of, int64_t& index, acc_t& logprob) {
  const int lane = threadIdx.x % kWarp;
  const acc_t neg_inf = -std::numeric_limits<acc_t>::infinity();
  acc_t best = neg_inf, m = neg_inf, s = acc_t(0);
  int64_t best_i = std::numeric_limits<int64_t>::max();
  for (int64_t c = lane; c < K; c += kWarp) {
    const acc_t x = x_of(c);
    const acc_t score = x + gumbel_of(c);
    if (score > best || (score == best && c < best_i)) {
      best = score;
      best_i = c;
    }
    softmax_merge(m, s, x, acc_t(1));
  }
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const acc_t o_best = __shfl_xor_sync(0xffffffffu, best, offset);
    const int64_t o_i = __shfl_xor_sync(0xffffffffu, best_i, offset);
    if (o_best > best || (o_best == best && o_i < best_i)) {
      best = o_best;
      best_i = o_i;
    }
    const acc_t o_m = __shfl_xor_sync(0xffffffffu, m, offset);
    const acc_t o_s = __shfl_xor_sync(0xffffffffu, s, offset);
    softmax_merge(m, s, o_m, o_s);
  }
  index = best_i < K ? best_i : 0;  // a row with every candidate used: index 0, as torch.argmax
  // Every allowed candidate at -inf: the softmax is 0/0; the ops' rule is log-prob -inf.
  logprob = m == neg_inf ? neg_inf : x_of(index) - (m + log(s));
}

// 1 / IDCG@n of the row whose gains `g` and discounts `d` (0 beyond the cutoff) lie in shared
// memory, 0 when IDCG <= 0. Sort-free: each gain's rank counts the larger ones, ties broken by
// index. Every thread of the block must call it (it reduces with block_sum).
template <typename acc_t>
__device__ acc_t inverse_idcg(const acc_t* g, const acc_t* d, int64_t K, acc_t* red) {
  acc_t part = acc_t(0);
  for (int64_t p = threadIdx.x; p < K; p += blockDim.x) {
    int64_t rank = 0;
    for (int64_t j = 0; j < K; ++j) rank += (g[j] > g[p]) || (g[j] == g[p] && j < p);
    part += g[p] * d[rank];
  }
  const acc_t idcg = block_sum(part, red);
  return idcg > acc_t(0) ? acc_t(1) / idcg : acc_t(0);
}

// One warp finishes one decoding step of `row` from its (unmasked) logits `logit_of(c)`: masks the
// used candidates, scales by 1/T, samples with warp_pool_sample, and writes index, logprob and
// used_out. Shared by pool_sample and the fused decode_step.
template <typename acc_t, typename LFn>
__device__ void warp_pool_step(int64_t row, int64_t K, LFn logit_of, const bool* __restrict__ used,
                               const acc_t* __restrict__ gumbel, double temperature,
                               int64_t* __restrict__ index_out, acc_t* __restrict__ logprob_out,
                               bool* __restrict__ used_out) {
  const int lane = threadIdx.x % kWarp;
  const acc_t t = static_cast<acc_t>(temperature);
  const bool* u = used + row * K;
  auto x_of = [&](int64_t c) -> acc_t {
    return u[c] ? -std::numeric_limits<acc_t>::infinity() : logit_of(c) / t;
  };
  // A used candidate scores NaN, which never wins a comparison: when every allowed candidate is
  // at -inf the pick is the lowest-index allowed one, not a used one (also at -inf).
  auto gumbel_of = [&](int64_t c) -> acc_t {
    return u[c] ? std::numeric_limits<acc_t>::quiet_NaN() : (gumbel ? gumbel[row * K + c] : acc_t(0));
  };
  int64_t index;
  acc_t logprob;
  warp_pool_sample<acc_t>(K, x_of, gumbel_of, index, logprob);
  if (lane == 0) {
    index_out[row] = index;
    logprob_out[row] = logprob;
  }
  for (int64_t c = lane; c < K; c += kWarp) used_out[row * K + c] = u[c] || c == index;
}

}  // namespace cuda
}  // namespace flexrec
