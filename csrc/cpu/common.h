// Helpers shared by the CPU kernels: input checks with actionable messages, DCG discounts.
#pragma once

#include <ATen/ATen.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
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

// Rows up to this K use the branchless rank count in ideal_dcg; longer rows use partial_sort.
constexpr int64_t kRankCountMaxK = 128;

// IDCG@n of one row of K gains, without sorting.
//
// With ties broken by index, the rank of gain i in descending order is
//   #{j < i : g_j >= g_i} + #{j > i : g_j > g_i},
// which is a permutation of 0..K-1, so IDCG = sum_i g_i d[rank_i] (d[r] = 0 for r >= n).
// Tied gains are equal, so the tie-break does not change the sum. The two inner loops are
// branchless compares that the compiler vectorises: at B=4096, K=30 on the 2-core dev box the
// whole swap_reward kernel went from 3.9 ms (std::partial_sort per row) to 0.45 ms (reference
// 5.0 ms). The O(K^2) count loses to sorting somewhere past K ~ 100 (estimate, not measured
// closely), hence kRankCountMaxK.
// `g` is in the compare type (float for float/half/bf16 gains, double for double); `scratch`
// has room for K values and is only used on the sort path.
template <typename cmp_t>
inline double ideal_dcg(const cmp_t* g, int64_t K, int64_t n, const double* d, cmp_t* scratch) {
  double idcg = 0.0;
  if (K <= kRankCountMaxK) {
    for (int64_t i = 0; i < K; ++i) {
      const cmp_t gi = g[i];
      int32_t rank = 0;
      for (int64_t j = 0; j < i; ++j) rank += static_cast<int32_t>(g[j] >= gi);
      for (int64_t j = i + 1; j < K; ++j) rank += static_cast<int32_t>(g[j] > gi);
      idcg += static_cast<double>(gi) * d[rank];
    }
    return idcg;
  }
  std::copy(g, g + K, scratch);
  std::partial_sort(scratch, scratch + n, scratch + K, [](cmp_t a, cmp_t b) { return a > b; });
  for (int64_t p = 0; p < n; ++p) idcg += static_cast<double>(scratch[p]) * d[p];
  return idcg;
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

}  // namespace flexrec
