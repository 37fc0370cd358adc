// CPU kernel of flexrec_C::pool_sample: one step of constrained permutation decoding, parallel
// over rows. Scores and the log-softmax are computed in float (double for double logits) with
// common.h's compact_softmax, the same arithmetic as permutation_logprob, so the log-probs
// reported while sampling are exactly those recomputed for training.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>

#include "common.h"

namespace flexrec {

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> pool_sample_cpu(
    const at::Tensor& logits_in, const at::Tensor& used_in, const c10::optional<at::Tensor>& gumbel_in,
    double temperature) {
  TORCH_CHECK(logits_in.dim() == 2, "logits must be 2-D (B, K), got ", logits_in.dim(), "-D");
  TORCH_CHECK(logits_in.size(1) >= 1, "logits has K = 0 candidates; a pool needs K >= 1");
  TORCH_CHECK(at::isFloatingType(logits_in.scalar_type()), "logits must be a floating tensor, got ",
              logits_in.scalar_type());
  TORCH_CHECK(used_in.sizes() == logits_in.sizes(), "used has shape ", used_in.sizes(),
              " but logits has ", logits_in.sizes(), "; they must match");
  TORCH_CHECK(used_in.scalar_type() == at::kBool, "used must be a bool tensor, got ",
              used_in.scalar_type(), "; build it with torch.zeros(B, K, dtype=torch.bool)");
  TORCH_CHECK(temperature > 0, "temperature must be > 0, got ", temperature);
  TORCH_CHECK(logits_in.device().is_cpu() && used_in.device().is_cpu(),
              "pool_sample (C++ CPU kernel) needs CPU tensors, got logits on ", logits_in.device(),
              " and used on ", used_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor used = used_in.contiguous();
  const int64_t B = logits.size(0), K = logits.size(1);
  const bool has_gumbel = gumbel_in.has_value() && gumbel_in->defined();
  at::Tensor gumbel;
  if (has_gumbel) {
    TORCH_CHECK(gumbel_in->sizes() == logits.sizes(), "gumbel has shape ", gumbel_in->sizes(),
                " but logits has ", logits.sizes(), "; draw one Gumbel(0, 1) noise per candidate");
    TORCH_CHECK(gumbel_in->device().is_cpu(), "gumbel must be on the CPU like logits, got ",
                gumbel_in->device());
  }
  const bool half = logits.scalar_type() == at::kHalf || logits.scalar_type() == at::kBFloat16;
  const auto lp_dtype = half ? at::kFloat : logits.scalar_type();
  at::Tensor index = at::empty({B}, logits.options().dtype(at::kLong));
  at::Tensor logprob = at::empty({B}, logits.options().dtype(lp_dtype));
  at::Tensor used_out = used.clone();
  std::atomic<int64_t> empty_row{-1};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, logits.scalar_type(), "pool_sample_cpu", [&] {
    using acc_t = acc_type_t<scalar_t>;
    const at::Tensor gumbel_acc = has_gumbel ? gumbel_in->to(logits.options().dtype(
                                                   c10::CppTypeToScalarType<acc_t>::value)).contiguous()
                                             : at::Tensor();
    const scalar_t* l_ptr = logits.const_data_ptr<scalar_t>();
    const bool* u_ptr = used.const_data_ptr<bool>();
    const acc_t* gb_ptr = has_gumbel ? gumbel_acc.const_data_ptr<acc_t>() : nullptr;
    int64_t* i_ptr = index.mutable_data_ptr<int64_t>();
    acc_t* lp_ptr = logprob.mutable_data_ptr<acc_t>();
    bool* uo_ptr = used_out.mutable_data_ptr<bool>();
    const acc_t T = static_cast<acc_t>(temperature);
    at::parallel_for(0, B, 64, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> y(K), e(K);
      for (int64_t b = begin; b < end; ++b) {
        const scalar_t* lrow = l_ptr + b * K;
        const bool* urow = u_ptr + b * K;
        int64_t best = -1, best_i = 0, n = 0;
        acc_t best_score = 0;
        for (int64_t c = 0; c < K; ++c) {
          if (urow[c]) continue;
          const acc_t yc = static_cast<acc_t>(lrow[c]) / T;
          const acc_t score = has_gumbel ? yc + gb_ptr[b * K + c] : yc;
          if (best < 0 || score > best_score) {  // strict: ties go to the lowest index
            best = c;
            best_i = n;
            best_score = score;
          }
          y[n++] = yc;
        }
        if (best < 0) {
          empty_row.store(b);
          i_ptr[b] = 0;
          lp_ptr[b] = 0;
          continue;
        }
        const SoftmaxStats<acc_t> st = compact_softmax(y.data(), n, e.data());
        i_ptr[b] = best;
        lp_ptr[b] = pick_logprob(y[best_i], st);  // -inf when every allowed score is -inf
        uo_ptr[b * K + best] = true;
      }
    });
  });
  TORCH_CHECK(empty_row.load() < 0, "pool_sample: row ", empty_row.load(),
              " has no allowed candidate (every entry of used is True); a permutation of K "
              "candidates takes exactly K steps");
  return {index, logprob, used_out};
}

}  // namespace

TORCH_LIBRARY_IMPL(flexrec_C, CPU, m) { m.impl("pool_sample", &pool_sample_cpu); }

}  // namespace flexrec
