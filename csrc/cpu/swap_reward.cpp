// CPU kernel of flexrec_C::swap_reward: O(K) per row plus the IDCG (common.h: ideal_dcg_rows, a
// sorting network over tiles of rows), instead of the reference's O(K^2) pairwise form, parallel
// over rows.
//
// For the causal mode, sum_{j>p} (g_p - g_j)(d_p - d_j)
//   = m g_p d_p - g_p S_d - d_p S_g + S_gd  with m = K-1-p and suffix sums over j > p,
// accumulated in double so that float32 inputs lose nothing to cancellation.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <functional>

#include "common.h"

namespace flexrec {

namespace {

template <typename scalar_t>
void swap_reward_row(const scalar_t* g_in, scalar_t* out, int64_t K, const std::vector<double>& d,
                     const std::vector<double>& inv_count, int64_t n, RewardMode mode,
                     double idcg, std::vector<double>& g) {
  for (int64_t p = 0; p < K; ++p) {
    g[p] = static_cast<double>(static_cast<acc_type_t<scalar_t>>(g_in[p]));
  }
  if (!(idcg > 0.0)) {
    for (int64_t p = 0; p < K; ++p) out[p] = scalar_t(0);
    return;
  }
  const double inv = 1.0 / idcg;
  switch (mode) {
    case RewardMode::kCausal: {
      double s_d = 0.0, s_g = 0.0, s_gd = 0.0;  // over j > p
      for (int64_t p = K - 1; p >= 0; --p) {
        const double m = static_cast<double>(K - 1 - p);
        const double total = m * g[p] * d[p] - g[p] * s_d - d[p] * s_g + s_gd;
        out[p] = static_cast<scalar_t>(total * inv_count[p] * inv);
        s_d += d[p];
        s_g += g[p];
        s_gd += g[p] * d[p];
      }
      break;
    }
    case RewardMode::kNoncausal: {
      double t_d = 0.0, t_g = 0.0, t_gd = 0.0;
      for (int64_t p = 0; p < K; ++p) {
        t_d += d[p];
        t_g += g[p];
        t_gd += g[p] * d[p];
      }
      const double m = static_cast<double>(K - 1);
      for (int64_t p = 0; p < K; ++p) {
        const double gd = g[p] * d[p];
        const double total = m * gd - g[p] * (t_d - d[p]) - d[p] * (t_g - g[p]) + (t_gd - gd);
        out[p] = static_cast<scalar_t>(total * inv_count[p] * inv);
      }
      break;
    }
    case RewardMode::kIndependent:
      for (int64_t p = 0; p < K; ++p) out[p] = static_cast<scalar_t>(g[p] * d[p] * inv);
      break;
    case RewardMode::kSequence: {
      double dcg = 0.0;
      for (int64_t p = 0; p < n; ++p) dcg += g[p] * d[p];
      for (int64_t p = 0; p < K; ++p) out[p] = static_cast<scalar_t>(dcg * inv);
      break;
    }
    case RewardMode::kSuffix: {
      double suffix = 0.0;
      for (int64_t p = K - 1; p >= 0; --p) {
        suffix += g[p] * d[p];
        out[p] = static_cast<scalar_t>(suffix * inv);
      }
      break;
    }
  }
}

at::Tensor swap_reward_cpu(const at::Tensor& gains_in, int64_t k, c10::string_view mode_name) {
  check_ranked_gains(gains_in, "gains");
  TORCH_CHECK(gains_in.device().is_cpu(), "swap_reward (C++ CPU kernel) got gains on ",
              gains_in.device());
  const RewardMode mode = parse_mode(std::string(mode_name));
  const at::Tensor gains = gains_in.contiguous();
  const int64_t B = gains.size(0), K = gains.size(1);
  const int64_t n = (k <= 0 || k > K) ? K : k;
  const std::vector<double> d = discounts(K, k);
  // 1 / (number of positions averaged over), 0 where there are none (the last causal position).
  std::vector<double> inv_count(K, 0.0);
  for (int64_t p = 0; p < K; ++p) {
    const int64_t m = mode == RewardMode::kCausal ? K - 1 - p : K - 1;
    inv_count[p] = m > 0 ? 1.0 / static_cast<double>(m) : 0.0;
  }
  const IdealDcgPlan plan(K, n);
  at::Tensor out = at::empty_like(gains);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gains.scalar_type(), "swap_reward_cpu", [&] {
    const scalar_t* g_ptr = gains.const_data_ptr<scalar_t>();
    scalar_t* o_ptr = out.mutable_data_ptr<scalar_t>();
    for_each_row_with_idcg(g_ptr, B, plan, d.data(), [&](int64_t b, double idcg, std::vector<double>& row) {
      swap_reward_row<scalar_t>(g_ptr + b * K, o_ptr + b * K, K, d, inv_count, n, mode, idcg, row);
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(flexrec_C, CPU, m) { m.impl("swap_reward", &swap_reward_cpu); }

}  // namespace flexrec
