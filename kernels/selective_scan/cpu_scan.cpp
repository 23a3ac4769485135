// Fast CPU selective scan, forward and backward, with everything around the recurrence
// fused in: the delta bias and softplus, the D skip and the z gate.
//
//     dt_t = softplus(delta_t + bias)         (each optional)
//     h_t  = exp(dt_t A) h_{t-1} + dt_t B_t u_t,   y_t = <C_t, h_t> + D u_t
//     out_t = y_t * silu(z_t)                  (when z is given)
//
// Work is split into tasks of (batch row, block of W channels inside one group), W = 8
// float32 (4 float64); a vector holds the block's W channels, the state is n such
// vectors, and the task walks the row's steps in order. u, delta, z, out and their
// gradients are (b, d, l) tensors read and written through their strides (the Mamba
// block passes channel-last views of its (b, l, d) activations: no copies); B, C are
// (b, g, n, l) through strides; A comes as A^T (n, d) contiguous.
// Steps run in processing order s = 0 .. len-1 at position t = s (t = len-1-s when
// reverse); positions at or past a row's length are padding: out and every gradient 0.
// Forward saves the state before every `chunk` steps, (tasks, n_chunks, n, W); backward
// recomputes each chunk's states (and y, for the z gate) from it, then runs the adjoint.
#include <torch/extension.h>

#include <vector>

#include "cpu_simd.h"

namespace {
using namespace simd;

template <typename T> BDL<T> bdl(const c10::optional<torch::Tensor>& x) {
  if (!x.has_value()) return {};
  return {x->data_ptr<std::remove_const_t<T>>(), x->stride(0), x->stride(1), x->stride(2)};
}
// B or C, (b, g, n, l) through its strides.
template <typename T> struct BGNL {
  const T* p;
  int64_t sb, sg, sn, sl;
};
template <typename T> BGNL<T> bgnl(const torch::Tensor& x) {
  return {x.data_ptr<T>(), x.stride(0), x.stride(1), x.stride(2), x.stride(3)};
}
template <typename T> T* ptr(const c10::optional<torch::Tensor>& x) {
  return x.has_value() ? x->data_ptr<T>() : nullptr;
}

template <typename T> struct Scan {
  int64_t b, d, l, n, g, chunk;
  bool reverse, softplus;
  BDL<const T> u, delta, z;
  BGNL<T> B, C;
  const T *A_t, *D, *bias;  // (n, d), (d), (d); D and bias may be null
  const int64_t* seq_lens;

  int64_t per_group() const { return d / g; }
  int64_t blocks() const { return (per_group() + lanes<T> - 1) / lanes<T>; }  // per group
  int64_t tasks() const { return b * g * blocks(); }
  int64_t n_chunks() const { return (l + chunk - 1) / chunk; }
};

template <typename T>
Scan<T> scan_of(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A_t,
                const torch::Tensor& B, const torch::Tensor& C,
                const c10::optional<torch::Tensor>& D, const c10::optional<torch::Tensor>& z,
                const c10::optional<torch::Tensor>& bias,
                const c10::optional<torch::Tensor>& seq_lens, bool softplus, bool reverse,
                int64_t chunk) {
  return {u.size(0), u.size(1), u.size(2), A_t.size(0), B.size(1), chunk, reverse, softplus,
          bdl<const T>(u), bdl<const T>(delta), bdl<const T>(z), bgnl<T>(B), bgnl<T>(C),
          A_t.data_ptr<T>(), ptr<T>(D), ptr<T>(bias),
          seq_lens.has_value() ? seq_lens->data_ptr<int64_t>() : nullptr};
}

// One task: batch row bi, channels [c0, c0 + count) of group grp, real length len.
struct Task {
  int64_t id, bi, grp, c0, count, len;
};
template <typename T> Task task_of(const Scan<T>& sc, int64_t id) {
  const int64_t per_row = sc.g * sc.blocks();
  const int64_t bi = id / per_row, grp = id % per_row / sc.blocks(), blk = id % sc.blocks();
  const int64_t first = blk * lanes<T>;
  return {id, bi, grp, grp * sc.per_group() + first,
          std::min<int64_t>(lanes<T>, sc.per_group() - first),
          sc.seq_lens ? sc.seq_lens[bi] : sc.l};
}

constexpr double kLog2e = 1.4426950408889634, kLn2 = 0.6931471805599453;

// The per-channel parameters of a task, as vectors over its channels. A is kept as
// A log2(e): the decay exp(dt A) is then exp2(dt A2), the cheaper vector function.
template <typename T> struct Params {
  std::vector<Vec<T>> A2;  // n
  Vec<T> D{}, bias{};
  void load(const Scan<T>& sc, const Task& tk) {
    A2.resize(sc.n);
    for (int64_t k = 0; k < sc.n; ++k)
      A2[k] = load_lanes(sc.A_t + k * sc.d + tk.c0, 1, tk.count) * T(kLog2e);
    if (sc.D) D = load_lanes(sc.D + tk.c0, 1, tk.count);
    if (sc.bias) bias = load_lanes(sc.bias + tk.c0, 1, tk.count);
  }
};

// dt at one step from delta (pre-softplus argument returned through arg).
template <typename T>
inline Vec<T> step_size(const Scan<T>& sc, const Params<T>& pr, const Task& tk, int64_t t,
                        Vec<T>& arg) {
  arg = load_lanes(sc.delta.at(tk.bi, tk.c0, t), sc.delta.sd, tk.count) + pr.bias;
  return sc.softplus ? softplus_vec<T>(arg) : arg;
}

template <typename T> struct ForwardScratch {
  Params<T> pr;
  std::vector<Vec<T>> h;
};

template <typename T>
void forward_task(const Scan<T>& sc, const Task& tk, const T* h0, BDL<T> out, T* last,
                  T* chunk_states, ForwardScratch<T>& s) {
  constexpr int64_t W = lanes<T>;
  const int64_t n = sc.n;
  s.pr.load(sc, tk);
  s.h.resize(n);
  Vec<T>* h = s.h.data();
  const Vec<T>* A2 = s.pr.A2.data();
  for (int64_t k = 0; k < n; ++k)
    h[k] = h0 ? load_lanes(h0 + (tk.bi * sc.d + tk.c0) * n + k, n, tk.count) : Vec<T>{};
  const T* B = sc.B.p + tk.bi * sc.B.sb + tk.grp * sc.B.sg;
  const T* C = sc.C.p + tk.bi * sc.C.sb + tk.grp * sc.C.sg;
  T* states = chunk_states ? chunk_states + tk.id * sc.n_chunks() * n * W : nullptr;
  for (int64_t s_ = 0; s_ < tk.len; ++s_) {
    if (states && s_ % sc.chunk == 0) std::memcpy(states + s_ / sc.chunk * n * W, h, n * sizeof(Vec<T>));
    const int64_t t = sc.reverse ? tk.len - 1 - s_ : s_;
    Vec<T> arg;
    const Vec<T> dt = step_size(sc, s.pr, tk, t, arg);
    const Vec<T> u = load_lanes(sc.u.at(tk.bi, tk.c0, t), sc.u.sd, tk.count);
    const Vec<T> du = dt * u;
    const T* Bt = B + t * sc.B.sl;
    const T* Ct = C + t * sc.C.sl;
    Vec<T> y = s.pr.D * u;
    for (int64_t k = 0; k < n; ++k) {
      h[k] = exp2_vec(dt * A2[k]) * h[k] + du * Bt[k * sc.B.sn];
      y += h[k] * Ct[k * sc.C.sn];
    }
    if (sc.z.p) {
      const Vec<T> z = load_lanes(sc.z.at(tk.bi, tk.c0, t), sc.z.sd, tk.count);
      y = y * z * sigmoid_vec<T>(z);
    }
    store_lanes(out.at(tk.bi, tk.c0, t), out.sd, tk.count, y);
  }
  for (int64_t t = tk.len; t < sc.l; ++t) store_lanes(out.at(tk.bi, tk.c0, t), out.sd, tk.count, Vec<T>{});
  for (int64_t k = 0; k < n; ++k)
    store_lanes(last + (tk.bi * sc.d + tk.c0) * n + k, n, tk.count, h[k]);
}

template <typename T> struct BackwardScratch {
  Params<T> pr;
  // One chunk: states before each step (hs[i], i <= chunk), decays exp(dt A), and per step
  // u, dt, its pre-softplus argument and y before the gate.
  std::vector<Vec<T>> hs, decay, u, dt, arg, y;
  std::vector<Vec<T>> q, gA, gB, gC;  // n each
  void size(int64_t n, int64_t chunk) {
    hs.resize((chunk + 1) * n);
    decay.resize(chunk * n);
    for (auto* v : {&u, &dt, &arg, &y}) v->resize(chunk);
    for (auto* v : {&q, &gA, &gB, &gC}) v->resize(n);
  }
};

template <typename T> struct Grads {
  BDL<T> u, delta, z;           // (b, d, l) through strides; z.p null without z
  T *A_rows, *D_rows, *bias_rows, *h0;  // (b, n, d), (b, d), (b, d), (b, d, n)
  T* BC_per_thread;             // (workers, 2, b, g, l, n): gB then gC
};

template <typename T>
void backward_task(const Scan<T>& sc, const Task& tk, const T* chunk_states, BDL<const T> g_out,
                   const T* g_last, const Grads<T>& gr, BackwardScratch<T>& s) {
  constexpr int64_t W = lanes<T>;
  const int64_t n = sc.n, chunk = sc.chunk, bi = tk.bi, c0 = tk.c0, cs = tk.count;
  s.pr.load(sc, tk);
  s.size(n, chunk);
  const Vec<T>* A2 = s.pr.A2.data();
  Vec<T>*q = s.q.data(), *gA = s.gA.data(), *gBv = s.gB.data(), *gCv = s.gC.data();
  for (int64_t k = 0; k < n; ++k) {
    q[k] = g_last ? load_lanes(g_last + (bi * sc.d + c0) * n + k, n, cs) : Vec<T>{};
    gA[k] = Vec<T>{};
  }
  Vec<T> gD{}, gbias{};
  const T* B = sc.B.p + bi * sc.B.sb + tk.grp * sc.B.sg;
  const T* C = sc.C.p + bi * sc.C.sb + tk.grp * sc.C.sg;
  const int64_t bc_size = sc.b * sc.g * sc.l * n;
  T* gB_rows = gr.BC_per_thread + at::get_thread_num() * 2 * bc_size + (bi * sc.g + tk.grp) * sc.l * n;
  T* gC_rows = gB_rows + bc_size;
  const T* states = chunk_states + tk.id * sc.n_chunks() * n * W;
  for (int64_t t = tk.len; t < sc.l; ++t) {
    store_lanes(gr.u.at(bi, c0, t), gr.u.sd, cs, Vec<T>{});
    store_lanes(gr.delta.at(bi, c0, t), gr.delta.sd, cs, Vec<T>{});
    if (gr.z.p) store_lanes(gr.z.at(bi, c0, t), gr.z.sd, cs, Vec<T>{});
  }
  for (int64_t c = (tk.len + chunk - 1) / chunk - 1; c >= 0; --c) {
    const int64_t s0 = c * chunk, s1 = std::min(tk.len, s0 + chunk);
    Vec<T>* hs = s.hs.data();
    std::memcpy(hs, states + c * n * W, n * sizeof(Vec<T>));
    for (int64_t s_ = s0; s_ < s1; ++s_) {  // 1. recompute the chunk's states (and y)
      const int64_t i = s_ - s0, t = sc.reverse ? tk.len - 1 - s_ : s_;
      const Vec<T> dt = step_size(sc, s.pr, tk, t, s.arg[i]);
      const Vec<T> u = load_lanes(sc.u.at(bi, c0, t), sc.u.sd, cs);
      const Vec<T> du = dt * u;
      s.dt[i] = dt;
      s.u[i] = u;
      const T* Bt = B + t * sc.B.sl;
      const T* Ct = C + t * sc.C.sl;
      Vec<T> y = s.pr.D * u;
      for (int64_t k = 0; k < n; ++k) {
        const Vec<T> a = exp2_vec(dt * A2[k]);
        const Vec<T> h = a * hs[i * n + k] + du * Bt[k * sc.B.sn];
        s.decay[i * n + k] = a;
        hs[(i + 1) * n + k] = h;
        y += h * Ct[k * sc.C.sn];
      }
      s.y[i] = y;
    }
    for (int64_t s_ = s1 - 1; s_ >= s0; --s_) {  // 2. the adjoint, last step first
      const int64_t i = s_ - s0, t = sc.reverse ? tk.len - 1 - s_ : s_;
      Vec<T> gy = load_lanes(g_out.at(bi, c0, t), g_out.sd, cs);
      if (sc.z.p) {
        const Vec<T> z = load_lanes(sc.z.at(bi, c0, t), sc.z.sd, cs);
        const Vec<T> sig = sigmoid_vec<T>(z);
        store_lanes(gr.z.at(bi, c0, t), gr.z.sd, cs, gy * s.y[i] * sig * (T(1) + z * (T(1) - sig)));
        gy = gy * z * sig;
      }
      const Vec<T> dt = s.dt[i], u = s.u[i], du = dt * u;
      const T* Bt = B + t * sc.B.sl;
      const T* Ct = C + t * sc.C.sl;
      // sum_k gh_k B_k, and sum_k (gradient through the decay) A2_k, which times ln 2 is
      // the same sum over A_k.
      Vec<T> g_hB{}, g_dA2{};
      for (int64_t k = 0; k < n; ++k) {
        const Vec<T> a = s.decay[i * n + k];
        const Vec<T> gh = Ct[k * sc.C.sn] * gy + q[k];  // gradient reaching h_t
        const Vec<T> via_decay = gh * a * hs[i * n + k];
        g_hB += gh * Bt[k * sc.B.sn];
        g_dA2 += via_decay * A2[k];
        gA[k] += via_decay * dt;
        gBv[k] = gh * du;
        gCv[k] = gy * hs[(i + 1) * n + k];
        q[k] = a * gh;
      }
      add_lane_sums<T>(gBv, n, gB_rows + t * n);
      add_lane_sums<T>(gCv, n, gC_rows + t * n);
      Vec<T> g_delta = u * g_hB + g_dA2 * T(kLn2);
      if (sc.softplus) g_delta = g_delta * sigmoid_vec<T>(s.arg[i]);
      gD += gy * u;
      gbias += g_delta;
      store_lanes(gr.u.at(bi, c0, t), gr.u.sd, cs, dt * g_hB + gy * s.pr.D);
      store_lanes(gr.delta.at(bi, c0, t), gr.delta.sd, cs, g_delta);
    }
  }
  for (int64_t k = 0; k < n; ++k) {
    store_lanes(gr.A_rows + (bi * n + k) * sc.d + c0, 1, cs, gA[k]);
    store_lanes(gr.h0 + (bi * sc.d + c0) * n + k, n, cs, q[k]);
  }
  store_lanes(gr.D_rows + bi * sc.d + c0, 1, cs, gD);
  store_lanes(gr.bias_rows + bi * sc.d + c0, 1, cs, gbias);
}

// State updates (b d l n) per thread below which a call stays on fewer threads: about
// 0.1 ms of forward work on one core.
constexpr int64_t kMinUpdatesPerThread = 1 << 18;

template <typename T> int64_t workers_of(const Scan<T>& sc) {
  return workers_for(sc.tasks(), sc.b * sc.d * sc.l * sc.n, kMinUpdatesPerThread);
}

}  // namespace

// Writes out (b, d, l), last (b, d, n) and, when given, chunk_states (tasks, n_chunks, n, W).
void forward(torch::Tensor u, torch::Tensor delta, torch::Tensor A_t, torch::Tensor B,
             torch::Tensor C, c10::optional<torch::Tensor> D, c10::optional<torch::Tensor> z,
             c10::optional<torch::Tensor> bias, c10::optional<torch::Tensor> h0,
             c10::optional<torch::Tensor> seq_lens, bool softplus, bool reverse, int64_t chunk,
             torch::Tensor out, torch::Tensor last, c10::optional<torch::Tensor> chunk_states) {
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_forward", [&] {
    using T = scalar_t;
    const Scan<T> sc = scan_of<T>(u, delta, A_t, B, C, D, z, bias, seq_lens, softplus, reverse, chunk);
    TORCH_CHECK(!chunk_states.has_value() ||
                    (chunk_states->size(0) == sc.tasks() && chunk_states->size(3) == lanes<T>),
                "chunk_states must be (tasks, n_chunks, n, lanes)");
    const BDL<T> o = bdl<T>(out);
    const int64_t workers = workers_of(sc);
    run_tasks<ForwardScratch<T>>(sc.tasks(), workers, [&](int64_t id, ForwardScratch<T>& s) {
      forward_task(sc, task_of(sc, id), ptr<T>(h0), o, last.data_ptr<T>(), ptr<T>(chunk_states), s);
    });
  });
}

// Writes g_u, g_delta, g_z (b, d, l); per batch row g_A (b, n, d), g_D and g_bias (b, d);
// g_h0 (b, d, n). Returns g_B and g_C as one (2, b, g, l, n) tensor.
torch::Tensor backward(torch::Tensor u, torch::Tensor delta, torch::Tensor A_t, torch::Tensor B,
                       torch::Tensor C, c10::optional<torch::Tensor> D,
                       c10::optional<torch::Tensor> z, c10::optional<torch::Tensor> bias,
                       c10::optional<torch::Tensor> seq_lens, bool softplus, bool reverse,
                       int64_t chunk, torch::Tensor chunk_states, torch::Tensor g_out,
                       c10::optional<torch::Tensor> g_last, torch::Tensor g_u,
                       torch::Tensor g_delta, c10::optional<torch::Tensor> g_z,
                       torch::Tensor g_A_rows, torch::Tensor g_D_rows,
                       torch::Tensor g_bias_rows, torch::Tensor g_h0) {
  torch::Tensor g_BC;
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_backward", [&] {
    using T = scalar_t;
    const Scan<T> sc = scan_of<T>(u, delta, A_t, B, C, D, z, bias, seq_lens, softplus, reverse, chunk);
    TORCH_CHECK(chunk_states.size(0) == sc.tasks() && chunk_states.size(3) == lanes<T>,
                "chunk_states must be (tasks, n_chunks, n, lanes)");
    const int64_t workers = workers_of(sc);
    // gB and gC sum over the channels of a group, which several tasks (on several
    // threads) share: each thread adds into its own slice, summed at the end.
    auto per_thread = torch::zeros({workers, 2, sc.b, sc.g, sc.l, sc.n}, u.options());
    const Grads<T> gr{bdl<T>(g_u), bdl<T>(g_delta), bdl<T>(g_z), g_A_rows.data_ptr<T>(),
                      g_D_rows.data_ptr<T>(), g_bias_rows.data_ptr<T>(), g_h0.data_ptr<T>(),
                      per_thread.data_ptr<T>()};
    const BDL<const T> go = bdl<const T>(g_out);
    run_tasks<BackwardScratch<T>>(sc.tasks(), workers, [&](int64_t id, BackwardScratch<T>& s) {
      backward_task(sc, task_of(sc, id), chunk_states.data_ptr<T>(), go, ptr<T>(g_last), gr, s);
    });
    g_BC = workers == 1 ? per_thread[0] : per_thread.sum(0);
  });
  return g_BC;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "selective scan, forward (CPU)");
  m.def("backward", &backward, "selective scan, backward (CPU)");
}
