// TyBox int8 kernels: TFLite's integer arithmetic, no dependencies beyond <stdint.h>.
// Per-channel fixed-point requantisation (QuantizeMultiplier constants computed by the
// generator), zero points, fused activations as quantised clamps. NHWC, batch 1.
#ifndef TYBOX_KERNELS_H_
#define TYBOX_KERNELS_H_

#include <stdint.h>

namespace tybox {

// (a * b * 2) >> 32 with round-to-nearest, saturating at INT32_MAX (gemmlowp semantics).
inline int32_t SaturatingRoundingDoublingHighMul(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = static_cast<int64_t>(a) * static_cast<int64_t>(b);
  const int64_t nudge = ab >= 0 ? (INT64_C(1) << 30) : (INT64_C(1) - (INT64_C(1) << 30));
  return static_cast<int32_t>((ab + nudge) / (INT64_C(1) << 31));
}

// x / 2^exponent rounded to nearest, ties away from zero.
inline int32_t RoundingDivideByPOT(int32_t x, int exponent) {
  const int32_t mask = static_cast<int32_t>((INT64_C(1) << exponent) - 1);
  const int32_t remainder = x & mask;
  const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

#if defined(TYBOX_SINGLE_ROUNDING)
inline int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier, int32_t shift) {
  const int total_shift = 31 - shift;
  const int64_t round = INT64_C(1) << (total_shift - 1);
  const int64_t r = static_cast<int64_t>(x) * static_cast<int64_t>(multiplier) + round;
  return static_cast<int32_t>(r >> total_shift);
}
#else
inline int32_t MultiplyByQuantizedMultiplier(int32_t x, int32_t multiplier, int32_t shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  const int32_t shifted = static_cast<int32_t>(static_cast<uint32_t>(x) << left);
  return RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(shifted, multiplier), right);
}
#endif

inline int32_t Clamp(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

struct ConvParams {
  int in_h, in_w, in_c, out_h, out_w, out_c;
  int k_h, k_w, stride_h, stride_w, dil_h, dil_w, pad_t, pad_l;
  int depth_multiplier;  // depthwise only
  int32_t in_offset, out_offset, act_min, act_max;
};

// CONV_2D, int8 activations, per-channel int8 weights [out_c][k_h][k_w][in_c], int32 bias.
inline void ConvPerChannel(const ConvParams& p, const int8_t* in, const int8_t* w,
                           const int32_t* bias, const int32_t* mult, const int32_t* shift,
                           int8_t* out) {
  const bool pointwise = p.k_h == 1 && p.k_w == 1 && p.stride_h == 1 && p.stride_w == 1 &&
                         p.pad_t == 0 && p.pad_l == 0;
  if (pointwise) {
    const int n = p.out_h * p.out_w;
    for (int i = 0; i < n; ++i) {
      const int8_t* x = in + i * p.in_c;
      int8_t* y = out + i * p.out_c;
      for (int oc = 0; oc < p.out_c; ++oc) {
        const int8_t* f = w + oc * p.in_c;
        int32_t acc = 0;
        for (int ic = 0; ic < p.in_c; ++ic) acc += static_cast<int32_t>(f[ic]) * (x[ic] + p.in_offset);
        if (bias) acc += bias[oc];
        acc = MultiplyByQuantizedMultiplier(acc, mult[oc], shift[oc]) + p.out_offset;
        y[oc] = static_cast<int8_t>(Clamp(acc, p.act_min, p.act_max));
      }
    }
    return;
  }
  for (int oy = 0; oy < p.out_h; ++oy) {
    for (int ox = 0; ox < p.out_w; ++ox) {
      const int iy0 = oy * p.stride_h - p.pad_t;
      const int ix0 = ox * p.stride_w - p.pad_l;
      for (int oc = 0; oc < p.out_c; ++oc) {
        int32_t acc = 0;
        for (int ky = 0; ky < p.k_h; ++ky) {
          const int iy = iy0 + ky * p.dil_h;
          if (iy < 0 || iy >= p.in_h) continue;
          for (int kx = 0; kx < p.k_w; ++kx) {
            const int ix = ix0 + kx * p.dil_w;
            if (ix < 0 || ix >= p.in_w) continue;
            const int8_t* x = in + (iy * p.in_w + ix) * p.in_c;
            const int8_t* f = w + ((oc * p.k_h + ky) * p.k_w + kx) * p.in_c;
            for (int ic = 0; ic < p.in_c; ++ic) acc += static_cast<int32_t>(f[ic]) * (x[ic] + p.in_offset);
          }
        }
        if (bias) acc += bias[oc];
        acc = MultiplyByQuantizedMultiplier(acc, mult[oc], shift[oc]) + p.out_offset;
        out[(oy * p.out_w + ox) * p.out_c + oc] = static_cast<int8_t>(Clamp(acc, p.act_min, p.act_max));
      }
    }
  }
}

// DEPTHWISE_CONV_2D, weights [1][k_h][k_w][out_c], out_c = in_c * depth_multiplier.
inline void DepthwiseConvPerChannel(const ConvParams& p, const int8_t* in, const int8_t* w,
                                    const int32_t* bias, const int32_t* mult,
                                    const int32_t* shift, int8_t* out) {
  for (int oy = 0; oy < p.out_h; ++oy) {
    for (int ox = 0; ox < p.out_w; ++ox) {
      const int iy0 = oy * p.stride_h - p.pad_t;
      const int ix0 = ox * p.stride_w - p.pad_l;
      for (int ic = 0; ic < p.in_c; ++ic) {
        for (int m = 0; m < p.depth_multiplier; ++m) {
          const int oc = ic * p.depth_multiplier + m;
          int32_t acc = 0;
          for (int ky = 0; ky < p.k_h; ++ky) {
            const int iy = iy0 + ky * p.dil_h;
            if (iy < 0 || iy >= p.in_h) continue;
            for (int kx = 0; kx < p.k_w; ++kx) {
              const int ix = ix0 + kx * p.dil_w;
              if (ix < 0 || ix >= p.in_w) continue;
              acc += static_cast<int32_t>(w[(ky * p.k_w + kx) * p.out_c + oc]) *
                     (in[(iy * p.in_w + ix) * p.in_c + ic] + p.in_offset);
            }
          }
          if (bias) acc += bias[oc];
          acc = MultiplyByQuantizedMultiplier(acc, mult[oc], shift[oc]) + p.out_offset;
          out[(oy * p.out_w + ox) * p.out_c + oc] = static_cast<int8_t>(Clamp(acc, p.act_min, p.act_max));
        }
      }
    }
  }
}

struct AddParams {
  int size, left_shift;
  int32_t in1_offset, in2_offset, out_offset;
  int32_t in1_mult, in1_shift, in2_mult, in2_shift, out_mult, out_shift;
  int32_t act_min, act_max;
};

// ADD (same shapes): both inputs rescaled to a common 2^left_shift fixed point, summed,
// rescaled to the output.
inline void Add(const AddParams& p, const int8_t* a, const int8_t* b, int8_t* out) {
  for (int i = 0; i < p.size; ++i) {
    const int32_t x1 = (p.in1_offset + a[i]) * (1 << p.left_shift);
    const int32_t x2 = (p.in2_offset + b[i]) * (1 << p.left_shift);
    const int32_t s1 = MultiplyByQuantizedMultiplier(x1, p.in1_mult, p.in1_shift);
    const int32_t s2 = MultiplyByQuantizedMultiplier(x2, p.in2_mult, p.in2_shift);
    const int32_t r = MultiplyByQuantizedMultiplier(s1 + s2, p.out_mult, p.out_shift) + p.out_offset;
    out[i] = static_cast<int8_t>(Clamp(r, p.act_min, p.act_max));
  }
}

struct PadParams {
  int in_h, in_w, c, out_h, out_w, pad_t, pad_l;
  int8_t value;
};

inline void Pad(const PadParams& p, const int8_t* in, int8_t* out) {
  for (int y = 0; y < p.out_h; ++y) {
    for (int x = 0; x < p.out_w; ++x) {
      const int iy = y - p.pad_t, ix = x - p.pad_l;
      int8_t* o = out + (y * p.out_w + x) * p.c;
      if (iy < 0 || iy >= p.in_h || ix < 0 || ix >= p.in_w) {
        for (int k = 0; k < p.c; ++k) o[k] = p.value;
      } else {
        const int8_t* s = in + (iy * p.in_w + ix) * p.c;
        for (int k = 0; k < p.c; ++k) o[k] = s[k];
      }
    }
  }
}

struct MeanParams {
  int h, w, c;
  int32_t mult, shift;    // in_scale / out_scale with 1/(h*w) folded in
  int32_t in_zp_times_n;  // input_zero_point * h * w
  int32_t bias;           // output zero point
};

// MEAN over H and W (TFLite's reference QuantizedMeanOrSum): sum(q) - zp_in * N, requantise
// with the multiplier that folds 1/N, add the output zero point, clamp to int8.
inline void Mean(const MeanParams& p, const int8_t* in, int8_t* out) {
  const int n = p.h * p.w;
  for (int ch = 0; ch < p.c; ++ch) {
    int32_t acc = 0;
    for (int i = 0; i < n; ++i) acc += in[i * p.c + ch];
    acc -= p.in_zp_times_n;
    const int32_t r = MultiplyByQuantizedMultiplier(acc, p.mult, p.shift) + p.bias;
    out[ch] = static_cast<int8_t>(Clamp(r, -128, 127));
  }
}

struct PoolParams {
  int in_h, in_w, c, out_h, out_w, k_h, k_w, stride_h, stride_w, pad_t, pad_l;
  int32_t act_min, act_max;
};

// AVERAGE_POOL_2D (input and output share scale and zero point): rounded integer average of
// the in-bounds window.
inline void AveragePool(const PoolParams& p, const int8_t* in, int8_t* out) {
  for (int oy = 0; oy < p.out_h; ++oy) {
    for (int ox = 0; ox < p.out_w; ++ox) {
      const int y0 = oy * p.stride_h - p.pad_t, x0 = ox * p.stride_w - p.pad_l;
      for (int ch = 0; ch < p.c; ++ch) {
        int32_t acc = 0;
        int count = 0;
        for (int ky = 0; ky < p.k_h; ++ky) {
          const int iy = y0 + ky;
          if (iy < 0 || iy >= p.in_h) continue;
          for (int kx = 0; kx < p.k_w; ++kx) {
            const int ix = x0 + kx;
            if (ix < 0 || ix >= p.in_w) continue;
            acc += in[(iy * p.in_w + ix) * p.c + ch];
            ++count;
          }
        }
        if (count == 0) count = 1;
        acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
        out[(oy * p.out_w + ox) * p.c + ch] = static_cast<int8_t>(Clamp(acc, p.act_min, p.act_max));
      }
    }
  }
}

struct RequantParams {
  int size;
  int32_t in_zp, out_zp, mult, shift;
};

// QUANTIZE int8 -> int8 (requantisation).
inline void Requantize(const RequantParams& p, const int8_t* in, int8_t* out) {
  for (int i = 0; i < p.size; ++i) {
    const int32_t r = MultiplyByQuantizedMultiplier(in[i] - p.in_zp, p.mult, p.shift) + p.out_zp;
    out[i] = static_cast<int8_t>(Clamp(r, -128, 127));
  }
}

}  // namespace tybox

#endif  // TYBOX_KERNELS_H_
