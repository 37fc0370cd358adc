// Every schema of flexrec's compiled ops, in one place, and the Python module flexrec._C.
//
// The compiled ops live in the private namespace `flexrec_C`; the public ops (`flexrec::*`,
// defined in Python with torch.library.custom_op) dispatch to them when the backend chosen at
// import is `c` (CPU kernels, csrc/cpu/) or `cuda` (CUDA kernels, csrc/cuda/). Each kernel file
// ends with its own TORCH_LIBRARY_IMPL block.
#include <Python.h>
#include <torch/library.h>
#include <pybind11/pybind11.h>

namespace py = pybind11;

TORCH_LIBRARY(flexrec_C, m) {
  m.def("swap_reward(Tensor gains, int k, str mode) -> Tensor");
  m.def("swap_reward_var(Tensor gains, Tensor gain_var, int k, str mode) -> Tensor");
  m.def("pool_sample(Tensor logits, Tensor used, Tensor? gumbel, float temperature) -> (Tensor, Tensor, Tensor)");
  m.def("candidate_logits(Tensor hidden, Tensor weight, Tensor cand_ids, Tensor? bias) -> Tensor");
  // grad_bias is an empty tensor when has_bias is false.
  m.def("candidate_logits_backward(Tensor grad, Tensor hidden, Tensor weight, Tensor cand_ids, bool has_bias) -> (Tensor, Tensor, Tensor)");
  m.def("permutation_logprob(Tensor logits, Tensor perm, float temperature) -> (Tensor, Tensor)");
  m.def("permutation_logprob_backward(Tensor grad_logprob, Tensor grad_entropy, Tensor logits, Tensor perm, float temperature) -> Tensor");
  m.def("decode_step(Tensor hidden, Tensor weight, Tensor cand_ids, Tensor used, Tensor? gumbel, float temperature, Tensor? bias) -> (Tensor, Tensor, Tensor)");
}

static py::dict build_info() {
  py::dict info;
  info["cpu"] = true;
  info["cuda"] = static_cast<bool>(FLEXREC_WITH_CUDA);
  info["cuda_archs"] = std::string(FLEXREC_CUDA_ARCHS);
  info["torch_version"] = std::string(FLEXREC_TORCH_VERSION);
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  return info;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "flexrec's compiled kernels; the ops are registered as torch.ops.flexrec_C.*";
  m.def("build_info", &build_info, "What this extension was compiled with.");
}
