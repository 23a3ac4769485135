// Fast CPU selective-scan core: one sequential pass per (batch row, channel), rows in parallel.
//
// The core sees dt already formed (bias and softplus applied by cpu.py with vectorised torch
// ops) and returns y before the optional z gate, which cpu.py also applies:
//     h_t = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t,   y_t = <C_t, h_t> + D * u_t
// Layout: u, dt, y: (b, d, l); B, C transposed to (b, g, l, n) so the state is contiguous;
// A: (d, n); chunk_states: (b, d, n_chunks, n), the state before every `chunk` processed
// steps, from which backward recomputes. n is padded by cpu.py to a whole number of 32-byte
// vectors (zeros in A, B, C, h0 keep the padded lanes at 0), and the state loops run on GCC
// vector types: auto-vectorising them with `omp simd` was 7x slower on n = 16.
// Steps run in processing order s = 0 .. len-1 at position t = s (t = len-1-s when reverse);
// positions at or past a row's length are padding, where y and every gradient are 0.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

template <typename T> struct Lanes {
  static constexpr int64_t width = 32 / sizeof(T);
  typedef T Vec __attribute__((vector_size(32)));
};
template <typename T> using Vec = typename Lanes<T>::Vec;

// Unaligned vector load and store (memcpy compiles to one vmovups).
template <typename T> inline Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T> inline void store(T* p, Vec<T> v) { std::memcpy(p, &v, sizeof(v)); }
template <typename T> inline T sum_lanes(Vec<T> v) {
  T s = 0;
  for (int64_t i = 0; i < Lanes<T>::width; ++i) s += v[i];
  return s;
}

// exp of 8 floats: Cephes-style range reduction and polynomial, about 1 ulp; flushes to 0
// below float's normal range.
inline Vec<float> exp_vec(Vec<float> x) {
  typedef int32_t IVec __attribute__((vector_size(32)));
  const float lo = -87.3365447504f, hi = 88.3762626647949f;
  Vec<float> xc = x < hi ? x : hi - Vec<float>{};
  xc = xc > lo ? xc : lo - Vec<float>{};
  Vec<float> k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  Vec<float> r = xc - k * 0.693359375f + k * 2.12194440e-4f;
  Vec<float> p = 1.9875691500e-4f - Vec<float>{};
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  IVec bits = (__builtin_convertvector(k, IVec) + 127) << 23;
  Vec<float> result = p * reinterpret_cast<Vec<float>&>(bits);
  return x < lo ? Vec<float>{} : result;
}
// float64 is for checking against the reference: exact exp, lane by lane.
inline Vec<double> exp_vec(Vec<double> x) {
  for (int64_t i = 0; i < Lanes<double>::width; ++i) x[i] = std::exp(x[i]);
  return x;
}

struct Dims {
  int64_t b, d, l, n, g, chunk, n_chunks;
  bool reverse;
};

template <typename T> struct Row {
  // Pointers of one (batch row, channel) and its group's B, C.
  const T *u, *dt, *A, *B, *C;
  T D;
  int64_t len;
};

template <typename T>
Row<T> row_of(int64_t row, const Dims& dm, const T* u, const T* dt, const T* A, const T* B,
              const T* C, const T* D, const int64_t* seq_lens) {
  const int64_t bi = row / dm.d, di = row % dm.d, grp = di / (dm.d / dm.g);
  const int64_t bc = (bi * dm.g + grp) * dm.l * dm.n;
  return {u + row * dm.l, dt + row * dm.l, A + di * dm.n, B + bc, C + bc,
          D ? D[di] : T(0), seq_lens ? seq_lens[bi] : dm.l};
}

inline int64_t position(const Dims& dm, int64_t len, int64_t s) {
  return dm.reverse ? len - 1 - s : s;
}

template <typename T>
void forward_rows(const Dims& dm, const T* u, const T* dt, const T* A, const T* B, const T* C,
                  const T* D, const T* h0, const int64_t* seq_lens, T* y, T* last,
                  T* chunk_states) {
  constexpr int64_t W = Lanes<T>::width;
  at::parallel_for(0, dm.b * dm.d, 1, [&](int64_t begin, int64_t end) {
    const int64_t n = dm.n, nv = n / W;
    std::vector<Vec<T>> state(nv);
    Vec<T>* h = state.data();
    for (int64_t row = begin; row < end; ++row) {
      const Row<T> r = row_of(row, dm, u, dt, A, B, C, D, seq_lens);
      for (int64_t j = 0; j < nv; ++j) h[j] = h0 ? load(h0 + row * n + j * W) : Vec<T>{};
      T* y_row = y + row * dm.l;
      std::fill(y_row + r.len, y_row + dm.l, T(0));
      for (int64_t s = 0; s < r.len; ++s) {
        if (chunk_states && s % dm.chunk == 0)
          std::memcpy(chunk_states + (row * dm.n_chunks + s / dm.chunk) * n, h, n * sizeof(T));
        const int64_t t = position(dm, r.len, s);
        const T step = r.dt[t], du = step * r.u[t];
        Vec<T> acc{};
        for (int64_t j = 0; j < nv; ++j) {
          const int64_t k = j * W;
          h[j] = exp_vec(step * load(r.A + k)) * h[j] + du * load(r.B + t * n + k);
          acc += h[j] * load(r.C + t * n + k);
        }
        y_row[t] = sum_lanes<T>(acc) + r.D * r.u[t];
      }
      std::memcpy(last + row * n, h, n * sizeof(T));
    }
  });
}

template <typename T> struct Grads {
  T *u, *dt, *A_rows, *D_rows, *h0;
  T* BC_per_thread;  // (threads, 2, b, g, l, n): gB then gC; cpu.py sums the threads
};

template <typename T>
void backward_rows(const Dims& dm, const T* u, const T* dt, const T* A, const T* B, const T* C,
                   const T* D, const int64_t* seq_lens, const T* chunk_states, const T* g_y,
                   const T* g_last, const Grads<T>& gr) {
  constexpr int64_t W = Lanes<T>::width;
  const int64_t bc_size = dm.b * dm.g * dm.l * dm.n;
  at::parallel_for(0, dm.b * dm.d, 1, [&](int64_t begin, int64_t end) {
    const int64_t n = dm.n, nv = n / W, chunk = dm.chunk;
    T* gB_all = gr.BC_per_thread + at::get_thread_num() * 2 * bc_size;
    T* gC_all = gB_all + bc_size;
    // One chunk's states (the state before its i-th step at block i) and decays exp(dt A).
    std::vector<Vec<T>> hs((chunk + 1) * nv), decay(chunk * nv), q_buf(nv), gA_buf(nv);
    Vec<T>* q = q_buf.data();  // gradient reaching the state before the step being undone
    Vec<T>* gA = gA_buf.data();
    for (int64_t row = begin; row < end; ++row) {
      const Row<T> r = row_of(row, dm, u, dt, A, B, C, D, seq_lens);
      const int64_t bc = r.B - B;
      const T* gy_row = g_y + row * dm.l;
      T* gu_row = gr.u + row * dm.l;
      T* gdt_row = gr.dt + row * dm.l;
      for (int64_t j = 0; j < nv; ++j) {
        q[j] = g_last ? load(g_last + row * n + j * W) : Vec<T>{};
        gA[j] = Vec<T>{};
      }
      T gD = 0;
      std::fill(gu_row + r.len, gu_row + dm.l, T(0));
      std::fill(gdt_row + r.len, gdt_row + dm.l, T(0));
      for (int64_t c = (r.len + chunk - 1) / chunk - 1; c >= 0; --c) {
        const int64_t s0 = c * chunk, s1 = std::min(r.len, s0 + chunk);
        std::memcpy(hs.data(), chunk_states + (row * dm.n_chunks + c) * n, n * sizeof(T));
        for (int64_t s = s0; s < s1; ++s) {  // 1. recompute the chunk's states
          const int64_t i = s - s0, t = position(dm, r.len, s);
          const T step = r.dt[t], du = step * r.u[t];
          for (int64_t j = 0; j < nv; ++j) {
            const Vec<T> a = exp_vec(step * load(r.A + j * W));
            decay[i * nv + j] = a;
            hs[(i + 1) * nv + j] = a * hs[i * nv + j] + du * load(r.B + t * n + j * W);
          }
        }
        for (int64_t s = s1 - 1; s >= s0; --s) {  // 2. the adjoint, last step first
          const int64_t i = s - s0, t = position(dm, r.len, s);
          const T step = r.dt[t], ut = r.u[t], gy = gy_row[t];
          T* gBt = gB_all + bc + t * n;
          T* gCt = gC_all + bc + t * n;
          Vec<T> g_step{}, g_hB{};
          for (int64_t j = 0; j < nv; ++j) {
            const int64_t k = j * W;
            const Vec<T> Bk = load(r.B + t * n + k), a = decay[i * nv + j];
            const Vec<T> gh = load(r.C + t * n + k) * gy + q[j];  // gradient of h_t
            const Vec<T> via_decay = gh * a * hs[i * nv + j];
            const Vec<T> Ak = load(r.A + k);
            g_step += gh * Bk * ut + via_decay * Ak;
            g_hB += gh * Bk;
            gA[j] += via_decay * step;
            store(gBt + k, load(gBt + k) + gh * (step * ut));
            store(gCt + k, load(gCt + k) + gy * hs[(i + 1) * nv + j]);
            q[j] = a * gh;
          }
          gD += gy * ut;
          gu_row[t] = sum_lanes<T>(g_hB) * step + gy * r.D;
          gdt_row[t] = sum_lanes<T>(g_step);
        }
      }
      for (int64_t j = 0; j < nv; ++j) {
        store(gr.A_rows + row * n + j * W, gA[j]);
        store(gr.h0 + row * n + j * W, q[j]);
      }
      gr.D_rows[row] = gD;
    }
  });
}

template <typename T> const T* ptr(const c10::optional<torch::Tensor>& x) {
  return x.has_value() ? x->data_ptr<T>() : nullptr;
}

const int64_t* lengths_ptr(const c10::optional<torch::Tensor>& seq_lens) {
  return seq_lens.has_value() ? seq_lens->data_ptr<int64_t>() : nullptr;
}

Dims dims_of(const torch::Tensor& u, const torch::Tensor& A, const torch::Tensor& B,
             int64_t chunk, bool reverse) {
  const int64_t l = u.size(2);
  return {u.size(0), u.size(1), l, A.size(1), B.size(1), chunk, (l + chunk - 1) / chunk, reverse};
}

}  // namespace

// Returns y (b, d, l), last_state (b, d, n) and, when save_chunks, chunk_states.
std::vector<torch::Tensor> forward(torch::Tensor u, torch::Tensor dt, torch::Tensor A,
                                   torch::Tensor B, torch::Tensor C,
                                   c10::optional<torch::Tensor> D, c10::optional<torch::Tensor> h0,
                                   c10::optional<torch::Tensor> seq_lens, bool reverse,
                                   int64_t chunk, bool save_chunks) {
  const Dims dm = dims_of(u, A, B, chunk, reverse);
  auto y = torch::empty_like(u);
  auto last = torch::empty({dm.b, dm.d, dm.n}, u.options());
  auto states = save_chunks ? torch::empty({dm.b, dm.d, dm.n_chunks, dm.n}, u.options())
                            : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_forward", [&] {
    forward_rows<scalar_t>(dm, u.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(),
                           A.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(),
                           ptr<scalar_t>(D), ptr<scalar_t>(h0), lengths_ptr(seq_lens),
                           y.data_ptr<scalar_t>(), last.data_ptr<scalar_t>(),
                           save_chunks ? states.data_ptr<scalar_t>() : nullptr);
  });
  return {y, last, states};
}

// Returns g_u, g_dt (b, d, l), per-row g_A (b, d, n) and g_D (b, d), g_h0 (b, d, n) and
// per-thread partial sums of g_B, g_C (threads, 2, b, g, l, n).
std::vector<torch::Tensor> backward(torch::Tensor u, torch::Tensor dt, torch::Tensor A,
                                    torch::Tensor B, torch::Tensor C,
                                    c10::optional<torch::Tensor> D,
                                    c10::optional<torch::Tensor> seq_lens, bool reverse,
                                    int64_t chunk, torch::Tensor chunk_states, torch::Tensor g_y,
                                    c10::optional<torch::Tensor> g_last) {
  const Dims dm = dims_of(u, A, B, chunk, reverse);
  auto g_u = torch::empty_like(u), g_dt = torch::empty_like(u);
  auto g_A = torch::empty({dm.b, dm.d, dm.n}, u.options());
  auto g_h0 = torch::empty({dm.b, dm.d, dm.n}, u.options());
  auto g_D = torch::empty({dm.b, dm.d}, u.options());
  auto g_BC = torch::zeros({at::get_num_threads(), 2, dm.b, dm.g, dm.l, dm.n}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_backward", [&] {
    Grads<scalar_t> gr{g_u.data_ptr<scalar_t>(), g_dt.data_ptr<scalar_t>(),
                       g_A.data_ptr<scalar_t>(), g_D.data_ptr<scalar_t>(),
                       g_h0.data_ptr<scalar_t>(), g_BC.data_ptr<scalar_t>()};
    backward_rows<scalar_t>(dm, u.data_ptr<scalar_t>(), dt.data_ptr<scalar_t>(),
                            A.data_ptr<scalar_t>(), B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(),
                            ptr<scalar_t>(D), lengths_ptr(seq_lens),
                            chunk_states.data_ptr<scalar_t>(), g_y.data_ptr<scalar_t>(),
                            ptr<scalar_t>(g_last), gr);
  });
  return {g_u, g_dt, g_A, g_D, g_h0, g_BC};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "selective scan core, forward (CPU)");
  m.def("backward", &backward, "selective scan core, backward (CPU)");
}
