// Helpers shared by the CPU kernels: input checks with actionable messages, DCG discounts.
#pragma once

#include <ATen/ATen.h>
#include <cmath>
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
