// CPU kernel of flexrec_C::swap_reward_var: the closed-form variance of each position's reward
// (FLEXREC.md section 5) in O(K) per row plus the IDCG (common.h: ideal_dcg_rows), parallel
// over rows.
//
// Every mode's reward is r_p = sum_q c[p, q] g_q / IDCG, so Var(r_p) = sum_q c[p, q]^2 s_q / IDCG^2.
// For causal, with m = K-1-p and sums over j > p,
//   sum_j c[p, j]^2 s_j = sum_j (d_p - d_j)^2 s_j / m^2 = (d_p^2 S_s - 2 d_p S_ds + S_dds) / m^2
//   c[p, p] = (m d_p - S_d) / m,
// and noncausal is the same with sums over j != p; accumulated in double.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common.h"

namespace flexrec {

namespace {

template <typename scalar_t>
void swap_reward_var_row(const scalar_t* s_in, scalar_t* out, int64_t K, const double* d,
                         RewardMode mode, double idcg, double* s) {
  for (int64_t p = 0; p < K; ++p) {
    s[p] = static_cast<double>(static_cast<acc_type_t<scalar_t>>(s_in[p]));
  }
  if (!(idcg > 0.0)) {
    for (int64_t p = 0; p < K; ++p) out[p] = scalar_t(0);
    return;
  }
  const double inv2 = 1.0 / (idcg * idcg);
  switch (mode) {
    case RewardMode::kCausal: {
      double S_d = 0.0, S_s = 0.0, S_ds = 0.0, S_dds = 0.0;  // over j > p
      for (int64_t p = K - 1; p >= 0; --p) {
        const int64_t m = K - 1 - p;
        double var = 0.0;
        if (m > 0) {
          const double dp = d[p];
          const double cpp = (static_cast<double>(m) * dp - S_d) / m;
          const double others = (dp * dp * S_s - 2.0 * dp * S_ds + S_dds) / (double(m) * m);
          var = (cpp * cpp * s[p] + others) * inv2;
        }
        out[p] = static_cast<scalar_t>(var);
        S_d += d[p];
        S_s += s[p];
        S_ds += d[p] * s[p];
        S_dds += d[p] * d[p] * s[p];
      }
      break;
    }
    case RewardMode::kNoncausal: {
      double T_d = 0.0, T_s = 0.0, T_ds = 0.0, T_dds = 0.0;
      for (int64_t p = 0; p < K; ++p) {
        T_d += d[p];
        T_s += s[p];
        T_ds += d[p] * s[p];
        T_dds += d[p] * d[p] * s[p];
      }
      const int64_t m = K - 1;
      for (int64_t p = 0; p < K; ++p) {
        double var = 0.0;
        if (m > 0) {
          const double dp = d[p], sp = s[p];
          const double S_d = T_d - dp, S_s = T_s - sp, S_ds = T_ds - dp * sp;
          const double S_dds = T_dds - dp * dp * sp;
          const double cpp = (static_cast<double>(m) * dp - S_d) / m;
          const double others = (dp * dp * S_s - 2.0 * dp * S_ds + S_dds) / (double(m) * m);
          var = (cpp * cpp * sp + others) * inv2;
        }
        out[p] = static_cast<scalar_t>(var);
      }
      break;
    }
    case RewardMode::kIndependent:
      for (int64_t p = 0; p < K; ++p) out[p] = static_cast<scalar_t>(d[p] * d[p] * s[p] * inv2);
      break;
    case RewardMode::kSequence: {
      double total = 0.0;
      for (int64_t p = 0; p < K; ++p) total += d[p] * d[p] * s[p];
      for (int64_t p = 0; p < K; ++p) out[p] = static_cast<scalar_t>(total * inv2);
      break;
    }
    case RewardMode::kSuffix: {
      double suffix = 0.0;
      for (int64_t p = K - 1; p >= 0; --p) {
        suffix += d[p] * d[p] * s[p];
        out[p] = static_cast<scalar_t>(suffix * inv2);
      }
      break;
    }
  }
}

at::Tensor swap_reward_var_cpu(const at::Tensor& gains_in, const at::Tensor& gain_var_in,
                               int64_t k, c10::string_view mode_name) {
  check_ranked_gains(gains_in, "gains");
  TORCH_CHECK(gains_in.device().is_cpu() && gain_var_in.device().is_cpu(),
              "swap_reward_var (C++ CPU kernel) needs CPU tensors, got gains on ", gains_in.device(),
              " and gain_var on ", gain_var_in.device());
  TORCH_CHECK(gain_var_in.sizes() == gains_in.sizes(), "gain_var has shape ", gain_var_in.sizes(),
              " but gains has ", gains_in.sizes(), "; pass one variance per gain");
  TORCH_CHECK(at::isFloatingType(gain_var_in.scalar_type()),
              "gain_var must be a floating tensor, got ", gain_var_in.scalar_type());
  const RewardMode mode = parse_mode(std::string(mode_name));
  const at::Tensor gains = gains_in.contiguous();
  const at::Tensor gain_var = gain_var_in.to(gains.scalar_type()).contiguous();
  const int64_t B = gains.size(0), K = gains.size(1);
  const int64_t n = (k <= 0 || k > K) ? K : k;
  const std::vector<double> d = discounts(K, k);
  const IdealDcgPlan plan(K, n);
  at::Tensor out = at::empty_like(gains);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gains.scalar_type(), "swap_reward_var_cpu", [&] {
    const scalar_t* g_ptr = gains.const_data_ptr<scalar_t>();
    const scalar_t* s_ptr = gain_var.const_data_ptr<scalar_t>();
    scalar_t* o_ptr = out.mutable_data_ptr<scalar_t>();
    for_each_row_with_idcg(g_ptr, B, plan, d.data(), [&](int64_t b, double idcg, std::vector<double>& s) {
      swap_reward_var_row<scalar_t>(s_ptr + b * K, o_ptr + b * K, K, d.data(), mode, idcg, s.data());
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(flexrec_C, CPU, m) { m.impl("swap_reward_var", &swap_reward_var_cpu); }

}  // namespace flexrec
