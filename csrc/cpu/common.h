// Helpers shared by the CPU kernels: input checks with actionable messages, DCG discounts.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace flexrec {

enum class RewardMode { kCausal, kNoncausal, kIndependent, kSequence, kSuffix };

inline RewardMode parse_mode(const std::string& mode) {
  if (mode == "causal") return RewardMode::kCausal;
  if (mode == "noncausal") return RewardMode::kNoncausal;
  if (mode == "independent") return RewardMode::kIndependent;
  if (mode == "sequence") return RewardMode::kSequence;
  if (mode == "suffix") return RewardMode::kSuffix;
  TORCH_CHECK(false, "unknown reward mode '", mode,
              "'; expected one of causal, noncausal, independent, sequence, suffix");
}

// d(p) = 1/log2(p+2) for 0-based p < cutoff, 0 beyond; cutoff = K when k <= 0.
inline std::vector<double> discounts(int64_t K, int64_t k) {
  const int64_t n = (k <= 0 || k > K) ? K : k;
  std::vector<double> d(K, 0.0);
  for (int64_t p = 0; p < n; ++p) d[p] = 1.0 / std::log2(static_cast<double>(p) + 2.0);
  return d;
}

inline void check_ranked_gains(const at::Tensor& gains, const char* name) {
  TORCH_CHECK(gains.dim() == 2, name, " must be 2-D (B, K), got ", gains.dim(), "-D");
  TORCH_CHECK(gains.size(1) >= 1, name, " has K = 0 candidates; a pool needs K >= 1");
  TORCH_CHECK(at::isFloatingType(gains.scalar_type()), name,
              " must be a floating tensor, got ", gains.scalar_type());
}

}  // namespace flexrec

namespace flexrec {

// Type the CPU kernels compute in: float for float/half/bfloat16 inputs, double for double.
template <typename scalar_t>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename scalar_t>
using acc_type_t = typename AccType<scalar_t>::type;

// The ideal DCG of many rows at once, without a per-row sort.
//
// A per-row std::sort of K = 30 gains cost ~0.5 us on the 2-core dev box, about 6x the rest of
// a swap_reward row. Instead, W rows are transposed into a (P, W) tile (P = K rounded up to a
// power of two, padded with -inf) and sorted together by Batcher's odd-even merge network: a
// fixed list of compare-exchanges, each a max/min over W lanes that the compiler vectorises.
// Micro-benchmark at K = 30 (same flags): ~100-150 ns/row for the network (W = 32 floats),
// ~300 ns/row for a branchless rank count, ~600 ns/row for std::sort. Tied gains sort like any
// others; the IDCG is then sum_{p < n} d_p x_p. Rows with K > kNetworkMaxK use partial_sort.
constexpr int64_t kNetworkMaxK = 128;

using SortingNetwork = std::vector<std::pair<int32_t, int32_t>>;

// Compare-exchanges (a, b), a < b, of Batcher's odd-even merge sort of P = 2^m inputs;
// 191 of them for P = 32.
inline SortingNetwork sorting_network(int64_t P) {
  SortingNetwork net;
  for (int64_t p = 1; p < P; p += p)
    for (int64_t k = p; k > 0; k /= 2)
      for (int64_t j = k % p; j + k < P; j += 2 * k)
        for (int64_t i = 0; i < k && i + j + k < P; ++i)
          if ((i + j) / (2 * p) == (i + j + k) / (2 * p))
            net.emplace_back(static_cast<int32_t>(i + j), static_cast<int32_t>(i + j + k));
  return net;
}

// Everything ideal_dcg_rows needs for one (K, n): built once per op call, outside the threads.
struct IdealDcgPlan {
  int64_t K, n, P;
  SortingNetwork net;
  IdealDcgPlan(int64_t K_, int64_t n_) : K(K_), n(n_), P(1) {
    while (P < K) P *= 2;
    if (K <= kNetworkMaxK) net = sorting_network(P);
  }
};

// Lanes per tile: 128 bytes of each tile row (4 SSE registers of float or of double).
template <typename acc_t>
constexpr int64_t kTileLanes = std::is_same<acc_t, double>::value ? 16 : 32;

// out[r] = IDCG@n of gains[r*K .. r*K+K) for r < rows (rows <= kTileLanes<acc_t>), compared in
// acc_t (float for float/half/bf16, double for double) and summed in double.
// `tile` has room for max(P * kTileLanes<acc_t>, K) values.
template <typename scalar_t, typename acc_t>
inline void ideal_dcg_rows(const scalar_t* gains, int64_t rows, const IdealDcgPlan& plan,
                           const double* d, acc_t* tile, double* out) {
  constexpr int64_t W = kTileLanes<acc_t>;
  const int64_t K = plan.K, n = plan.n;
  if (K > kNetworkMaxK) {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t i = 0; i < K; ++i) tile[i] = static_cast<acc_t>(gains[r * K + i]);
      std::partial_sort(tile, tile + n, tile + K, [](acc_t a, acc_t b) { return a > b; });
      double idcg = 0.0;
      for (int64_t p = 0; p < n; ++p) idcg += static_cast<double>(tile[p]) * d[p];
      out[r] = idcg;
    }
    return;
  }
  const acc_t pad = -std::numeric_limits<acc_t>::infinity();
  for (int64_t i = 0; i < plan.P; ++i)
    for (int64_t l = 0; l < W; ++l)
      tile[i * W + l] = (i < K && l < rows) ? static_cast<acc_t>(gains[l * K + i]) : pad;
  for (const auto& [a, b] : plan.net) {
    acc_t* __restrict hi = tile + a * W;
    acc_t* __restrict lo = tile + b * W;
    for (int64_t l = 0; l < W; ++l) {
      const acc_t u = hi[l], v = lo[l];
      hi[l] = std::max(u, v);
      lo[l] = std::min(u, v);
    }
  }
  double acc[W] = {};
  for (int64_t p = 0; p < n; ++p)
    for (int64_t l = 0; l < W; ++l) acc[l] += d[p] * static_cast<double>(tile[p * W + l]);
  for (int64_t r = 0; r < rows; ++r) out[r] = acc[r];
}

// Calls row_fn(b, idcg, scratch) for every row b of gains (B, K) in parallel, each row's IDCG@n
// computed kTileLanes rows at a time by ideal_dcg_rows. `scratch` is K doubles of per-thread
// scratch space for row_fn. Shared by swap_reward and swap_reward_var.
template <typename scalar_t, typename RowFn>
void for_each_row_with_idcg(const scalar_t* gains, int64_t B, const IdealDcgPlan& plan,
                            const double* d, RowFn row_fn) {
  using acc_t = acc_type_t<scalar_t>;
  constexpr int64_t W = kTileLanes<acc_t>;
  const int64_t K = plan.K;
  at::parallel_for(0, B, 64, [&](int64_t begin, int64_t end) {
    std::vector<double> scratch(K);
    std::vector<acc_t> tile(std::max(plan.P * W, K));
    double idcg[W];
    for (int64_t b0 = begin; b0 < end; b0 += W) {
      const int64_t rows = std::min(W, end - b0);
      ideal_dcg_rows(gains + b0 * K, rows, plan, d, tile.data(), idcg);
      for (int64_t r = 0; r < rows; ++r) row_fn(b0 + r, idcg[r], scratch);
    }
  });
}

// exp for the masked-softmax kernels. The float version is a branchless Cephes-style polynomial
// (max relative error ~2 ulp on [-87, 88]) that the compiler can vectorise, unlike std::exp.
inline float exp_poly(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float fn = (x * 1.44269504088896341f + magic) - magic;
  float r = x - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(fn) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
inline double exp_poly(double x) { return std::exp(x); }

// Softmax of one row of n scaled logits y, already compacted to the allowed candidates (in
// ascending candidate order). Writes e[i] = exp(y_i - max) and returns the max, log Z, the
// entropy and Z, in acc_t. pool_sample and permutation_logprob both call it on the same compacted
// rows, so they report bit-identical log-probs for the same logits. Compacting (rather than
// masking) halves the work of a whole permutation: step t has K - t candidates, not K.
template <typename acc_t>
struct SoftmaxStats {
  acc_t mx;
  acc_t logz;
  acc_t entropy;
  acc_t z;
};

// h . w, vectorised: `omp simd` lets the compiler split the sum into lanes, which it may not
// reassociate otherwise (a pragma cannot sit inside the AT_DISPATCH macro, hence a function). candidate_logits and
// decode_step both use it, so decode_step's logits are candidate_logits' to the bit.
template <typename acc_t, typename scalar_t>
inline acc_t dot_product(const acc_t* h, const scalar_t* w, int64_t H) {
  acc_t dot = 0;
#pragma omp simd reduction(+ : dot)
  for (int64_t j = 0; j < H; ++j) dot += h[j] * static_cast<acc_t>(w[j]);
  return dot;
}

template <typename acc_t>
inline SoftmaxStats<acc_t> compact_softmax(const acc_t* y, int64_t n, acc_t* e) {
  // `omp simd` lets the compiler vectorise these reductions, which it may not reassociate
  // otherwise.
  acc_t mx = -std::numeric_limits<acc_t>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, y[i]);
  acc_t z = 0, s = 0;
#pragma omp simd reduction(+ : z, s)
  for (int64_t i = 0; i < n; ++i) {
    const acc_t shifted = y[i] - mx;
    const acc_t ei = exp_poly(shifted);
    e[i] = ei;
    z += ei;
    s += ei * shifted;
  }
  const acc_t logz = std::log(z);
  return {mx, logz, logz - s / z, z};
}

// Log-prob of the pick y_pick among the compacted scores that gave `st`. When every allowed
// candidate scores -inf the softmax is 0/0; the ops' rule (flexrec/ops/pool_sample.py, docs/ops.md)
// is then the lowest-index allowed candidate with log-prob -inf, which every backend follows.
template <typename acc_t>
inline acc_t pick_logprob(acc_t y_pick, const SoftmaxStats<acc_t>& st) {
  if (st.mx == -std::numeric_limits<acc_t>::infinity()) return st.mx;
  return y_pick - st.mx - st.logz;
}

}  // namespace flexrec
