// Input checks whose messages name the tensor and print got-vs-expected (style.md §2.4 rule 7).
//
//   RPFM_CHECK_DTYPE(op, x, at::kFloat)   ->  "euler_cfg_step_: x must have dtype Float, got Half"
//
// `op` is the user-facing name of the function doing the check; the tensor's name is its C++ variable name, so
// keep variable names equal to the schema's argument names.
//
// Messages are assembled here with std::to_string and handed to TORCH_CHECK as one std::string, so no number is
// ever written to a std::ostream from this extension. On the GPU machine (torch 2.11.0+cu130, GCC 13), streaming
// an integer into c10::str's ostringstream from an extension crashed with a segfault (strings were fine), most
// likely two libstdc++ copies disagreeing about locale facets; this path avoids iostreams altogether.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/core/SymInt.h>
#include <c10/core/SymNodeImpl.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

namespace rpfm::detail {

inline std::string to_str(const std::string& s) { return s; }
inline std::string to_str(const char* s) { return s; }
inline std::string to_str(char c) { return std::string(1, c); }
inline std::string to_str(bool b) { return b ? "true" : "false"; }
template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool> &&
                                           !std::is_same_v<T, char>, int> = 0>
inline std::string to_str(T v) {
  return std::to_string(v);
}
inline std::string to_str(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}
inline std::string to_str(at::ScalarType t) { return c10::toString(t); }
inline std::string to_str(const c10::Device& d) {
  std::string s = c10::DeviceTypeName(d.type(), /*lower_case=*/true);
  return d.has_index() ? s + ":" + std::to_string(d.index()) : s;
}
inline std::string to_str(const c10::SymInt& v) {
  if (auto i = v.maybe_as_int()) return std::to_string(*i);
  return v.toSymNode()->str();  // a symbolic size under torch.compile
}
template <typename T>
inline std::string to_str(c10::ArrayRef<T> list) {
  std::string s = "[";
  for (size_t i = 0; i < list.size(); ++i) {
    if (i > 0) s += ", ";
    s += to_str(list[i]);
  }
  return s + "]";
}
inline std::string to_str(const std::vector<int64_t>& v) { return to_str(c10::IntArrayRef(v)); }

template <typename... Args>
inline std::string cat(const Args&... args) {
  std::string out;
  ((out += to_str(args)), ...);
  return out;
}

}  // namespace rpfm::detail

// TORCH_CHECK with the message built by rpfm::detail::cat (see the note at the top).
#define RPFM_CHECK(cond, ...) TORCH_CHECK((cond), ::rpfm::detail::cat(__VA_ARGS__))

#define RPFM_CHECK_DTYPE(op, t, expected)                                                                \
  RPFM_CHECK((t).scalar_type() == (expected), op, ": ", #t, " must have dtype ", (expected), ", got ",   \
             (t).scalar_type())

#define RPFM_CHECK_SAME_DTYPE(op, t, ref)                                                                \
  RPFM_CHECK((t).scalar_type() == (ref).scalar_type(), op, ": ", #t, " must have the dtype of ", #ref,   \
             " (", (ref).scalar_type(), "), got ", (t).scalar_type())

#define RPFM_CHECK_SAME_DEVICE(op, t, ref)                                                               \
  RPFM_CHECK((t).device() == (ref).device(), op, ": ", #t, " must be on the device of ", #ref, " (",     \
             (ref).device(), "), got ", (t).device())

#define RPFM_CHECK_CONTIGUOUS(op, t)                                                                     \
  RPFM_CHECK((t).is_contiguous(), op, ": ", #t, " must be contiguous, got shape ", (t).sizes(),          \
             " with strides ", (t).strides(), " (call .contiguous() first)")

#define RPFM_CHECK_DIM(op, t, expected)                                                                  \
  RPFM_CHECK((t).dim() == (expected), op, ": ", #t, " must have ", (expected), " dims, got shape ",      \
             (t).sym_sizes())

#define RPFM_CHECK_CUDA(op, t)                                                                           \
  RPFM_CHECK((t).is_cuda(), op, ": ", #t, " must be a CUDA tensor, got device ", (t).device())
