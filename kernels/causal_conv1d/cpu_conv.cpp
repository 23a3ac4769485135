// Fast CPU depthwise causal conv with its bias and SiLU fused, forward and backward.
//
//     causal:  out[t] = act(bias + sum_k w[k] x[t - (w-1) + k])     x = 0 before t = 0
//     reverse: out[t] = act(bias + sum_k w[k] x[t + (w-1) - k])     x = 0 at t >= len
//
// (reverse is the causal conv of each row's real part read backwards: the Mamba block's
// reverse direction, without flipping or masking copies.) Tasks are (batch row, block of
// W channels); a vector holds W channels; the task walks the row keeping the last w
// inputs in a sliding window. x, out and their gradients are (b, d, l) tensors through
// their strides (channel-last views cost no copy); the weight comes as (w, d).
// Backward recomputes the pre-activation rather than saving it.
#include <torch/extension.h>

#include <vector>

#include "cpu_simd.h"

namespace {
using namespace simd;

template <typename T> BDL<T> bdl(const torch::Tensor& x) {
  return {x.data_ptr<std::remove_const_t<T>>(), x.stride(0), x.stride(1), x.stride(2)};
}

template <typename T> struct Conv {
  int64_t b, d, l, w;
  bool reverse, silu;
  BDL<const T> x;
  const T *w_t, *bias;  // (w, d), (d) or null
  const int64_t* seq_lens;

  int64_t blocks() const { return (d + lanes<T> - 1) / lanes<T>; }
  int64_t tasks() const { return b * blocks(); }
};

struct Task {
  int64_t bi, c0, count, len;
};
template <typename T> Task task_of(const Conv<T>& cv, int64_t id) {
  const int64_t bi = id / cv.blocks(), c0 = id % cv.blocks() * lanes<T>;
  return {bi, c0, std::min<int64_t>(lanes<T>, cv.d - c0), cv.seq_lens ? cv.seq_lens[bi] : cv.l};
}

template <typename T> struct Scratch {
  std::vector<Vec<T>> weight, window, g_window, g_weight;  // w each
  Vec<T> bias{};
  void load(const Conv<T>& cv, const Task& tk) {
    for (auto* v : {&weight, &window, &g_window, &g_weight}) v->assign(cv.w, Vec<T>{});
    for (int64_t k = 0; k < cv.w; ++k) weight[k] = load_lanes(cv.w_t + k * cv.d + tk.c0, 1, tk.count);
    bias = cv.bias ? load_lanes(cv.bias + tk.c0, 1, tk.count) : Vec<T>{};
  }
};

// Slides the window one step to position t (t - 1 in reverse) and returns the
// pre-activation there; window[k] multiplies weight[k].
template <typename T>
inline Vec<T> slide(const Conv<T>& cv, const Task& tk, int64_t t, Scratch<T>& s) {
  Vec<T>* win = s.window.data();
  for (int64_t k = 0; k + 1 < cv.w; ++k) win[k] = win[k + 1];
  win[cv.w - 1] = (cv.reverse && t >= tk.len)
                      ? Vec<T>{}
                      : load_lanes(cv.x.at(tk.bi, tk.c0, t), cv.x.sd, tk.count);
  Vec<T> pre = s.bias;
  for (int64_t k = 0; k < cv.w; ++k) pre += s.weight[k] * win[k];
  return pre;
}

template <typename T>
void forward_task(const Conv<T>& cv, const Task& tk, BDL<T> out, Scratch<T>& s) {
  s.load(cv, tk);
  for (int64_t s_ = 0; s_ < cv.l; ++s_) {
    const int64_t t = cv.reverse ? cv.l - 1 - s_ : s_;
    const Vec<T> pre = slide(cv, tk, t, s);
    store_lanes(out.at(tk.bi, tk.c0, t), out.sd, tk.count, cv.silu ? pre * sigmoid_vec<T>(pre) : pre);
  }
}

template <typename T>
void backward_task(const Conv<T>& cv, const Task& tk, BDL<const T> g_out, BDL<T> g_x,
                   T* g_w_rows, T* g_bias_rows, Scratch<T>& s) {
  s.load(cv, tk);
  const int64_t w = cv.w, step = cv.reverse ? -1 : 1;
  Vec<T>* g_win = s.g_window.data();  // gradient of the inputs in the window so far
  Vec<T> g_bias{};
  // The input at position p is finished once it leaves the window; padding in reverse
  // (p >= len) is read as 0, so its gradient is 0.
  auto put = [&](int64_t p, Vec<T> g) {
    if (p < 0 || p >= cv.l) return;
    store_lanes(g_x.at(tk.bi, tk.c0, p), g_x.sd, tk.count,
                (cv.reverse && p >= tk.len) ? Vec<T>{} : g);
  };
  for (int64_t s_ = 0; s_ < cv.l; ++s_) {
    const int64_t t = cv.reverse ? cv.l - 1 - s_ : s_;
    const Vec<T> pre = slide(cv, tk, t, s);
    Vec<T> g = load_lanes(g_out.at(tk.bi, tk.c0, t), g_out.sd, tk.count);
    if (cv.silu) {
      const Vec<T> sig = sigmoid_vec<T>(pre);
      g = g * sig * (T(1) + pre * (T(1) - sig));
    }
    g_bias += g;
    for (int64_t k = 0; k < w; ++k) {
      s.g_weight[k] += g * s.window[k];
      g_win[k] += g * s.weight[k];
    }
    put(t - step * (w - 1), g_win[0]);  // window[0]'s position, leaving now
    for (int64_t k = 0; k + 1 < w; ++k) g_win[k] = g_win[k + 1];
    g_win[w - 1] = Vec<T>{};
  }
  // The last w - 1 positions are still in the window.
  const int64_t t_next = cv.reverse ? -1 : cv.l;
  for (int64_t k = 0; k + 1 < w; ++k) put(t_next + step * (k - (w - 1)), g_win[k]);
  for (int64_t k = 0; k < w; ++k)
    store_lanes(g_w_rows + (tk.bi * w + k) * cv.d + tk.c0, 1, tk.count, s.g_weight[k]);
  store_lanes(g_bias_rows + tk.bi * cv.d + tk.c0, 1, tk.count, g_bias);
}

// Multiply-adds (b d l w) per thread below which a call stays on fewer threads: about
// 0.05 ms of work on one core.
constexpr int64_t kMinTapsPerThread = 1 << 19;

template <typename T> int64_t workers_of(const Conv<T>& cv) {
  return workers_for(cv.tasks(), cv.b * cv.d * cv.l * cv.w, kMinTapsPerThread);
}

template <typename T>
Conv<T> conv_of(const torch::Tensor& x, const torch::Tensor& w_t,
                const c10::optional<torch::Tensor>& bias,
                const c10::optional<torch::Tensor>& seq_lens, bool reverse, bool silu) {
  return {x.size(0), x.size(1), x.size(2), w_t.size(0), reverse, silu, bdl<const T>(x),
          w_t.data_ptr<T>(), bias.has_value() ? bias->data_ptr<T>() : nullptr,
          seq_lens.has_value() ? seq_lens->data_ptr<int64_t>() : nullptr};
}

}  // namespace

// Writes out (b, d, l).
void forward(torch::Tensor x, torch::Tensor w_t, c10::optional<torch::Tensor> bias,
             c10::optional<torch::Tensor> seq_lens, bool reverse, bool silu, torch::Tensor out) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_cpu_forward", [&] {
    using T = scalar_t;
    const Conv<T> cv = conv_of<T>(x, w_t, bias, seq_lens, reverse, silu);
    const BDL<T> o = bdl<T>(out);
    run_tasks<Scratch<T>>(cv.tasks(), workers_of(cv), [&](int64_t id, Scratch<T>& s) {
      forward_task(cv, task_of(cv, id), o, s);
    });
  });
}

// Writes g_x (b, d, l) and per batch row g_w (b, w, d) and g_bias (b, d).
void backward(torch::Tensor x, torch::Tensor w_t, c10::optional<torch::Tensor> bias,
              c10::optional<torch::Tensor> seq_lens, bool reverse, bool silu,
              torch::Tensor g_out, torch::Tensor g_x, torch::Tensor g_w_rows,
              torch::Tensor g_bias_rows) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv1d_cpu_backward", [&] {
    using T = scalar_t;
    const Conv<T> cv = conv_of<T>(x, w_t, bias, seq_lens, reverse, silu);
    const BDL<const T> go = bdl<const T>(g_out);
    const BDL<T> gx = bdl<T>(g_x);
    run_tasks<Scratch<T>>(cv.tasks(), workers_of(cv), [&](int64_t id, Scratch<T>& s) {
      backward_task(cv, task_of(cv, id), go, gx, g_w_rows.data_ptr<T>(),
                    g_bias_rows.data_ptr<T>(), s);
    });
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "depthwise causal conv + bias + SiLU, forward (CPU)");
  m.def("backward", &backward, "depthwise causal conv + bias + SiLU, backward (CPU)");
}
