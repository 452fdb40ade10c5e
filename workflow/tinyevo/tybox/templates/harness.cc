// Host harness for the generated TyBox library (host only: it may use the heap; the library
// does not). Modes (file formats in README.md):
//   harness info
//   harness extract <images.bin> <features.bin>
//   harness check <images.bin> <expected_features.bin>
//   harness stream --stream-x F --stream-y F --eval-x F --eval-y F --out curve.csv
//                  [--capacity K] [--lr LR] [--loss mse_softmax|cross_entropy] [--features]
//                  [--init-weights W.bin] [--weights-out W.bin] [--eval-pred P.bin]
//   harness cost <images.bin>    (builds with TINYEVO_COUNTER only: the emulated Cortex-M)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tybox.h"

namespace {

// sizes are printed as unsigned long: newlib's printf (the Cortex-M build) has no %zu
unsigned long ul(size_t v) { return static_cast<unsigned long>(v); }

bool read_file(const char* path, std::vector<char>* out) {
  std::FILE* f = std::fopen(path, "rb");
  if (!f) {
    std::fprintf(stderr, "harness: cannot open %s\n", path);
    return false;
  }
  out->clear();
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out->insert(out->end(), buf, buf + n);
  std::fclose(f);
  return true;
}

bool write_file(const char* path, const void* data, size_t n) {
  std::FILE* f = std::fopen(path, "wb");
  if (!f) {
    std::fprintf(stderr, "harness: cannot write %s\n", path);
    return false;
  }
  const bool ok = std::fwrite(data, 1, n, f) == n;
  return std::fclose(f) == 0 && ok;
}

// int8 records of `record` bytes each; fails when the size is not a multiple.
bool read_records(const char* path, size_t record, std::vector<char>* out, size_t* count) {
  if (!read_file(path, out)) return false;
  if (out->empty() || out->size() % record != 0) {
    std::fprintf(stderr, "harness: %s has %lu bytes, not a positive multiple of %lu\n", path,
                 ul(out->size()), ul(record));
    return false;
  }
  *count = out->size() / record;
  return true;
}

bool read_labels(const char* path, size_t expected, std::vector<int32_t>* out) {
  std::vector<char> raw;
  if (!read_file(path, &raw)) return false;
  if (raw.size() != expected * sizeof(int32_t)) {
    std::fprintf(stderr, "harness: %s: expected %lu int32 labels, found %lu bytes\n", path,
                 ul(expected), ul(raw.size()));
    return false;
  }
  out->resize(expected);
  std::memcpy(out->data(), raw.data(), raw.size());
  for (size_t i = 0; i < expected; ++i) {
    if ((*out)[i] < 0 || (*out)[i] >= TYBOX_C) {
      std::fprintf(stderr, "harness: %s: label %d at %lu outside 0..%d\n", path, (*out)[i], ul(i),
                   TYBOX_C - 1);
      return false;
    }
  }
  return true;
}

void extract_all(const std::vector<char>& images, size_t n, std::vector<int8_t>* feats) {
  feats->resize(n * TYBOX_F);
  for (size_t i = 0; i < n; ++i)
    tybox_extract(reinterpret_cast<const int8_t*>(images.data()) + i * TYBOX_INPUT_SIZE,
                  feats->data() + i * TYBOX_F);
}

int cmd_info() {
  std::printf("{\"input_h\": %d, \"input_w\": %d, \"input_c\": %d, \"input_size\": %d, "
              "\"input_scale\": %.9g, \"input_zero_point\": %d, \"feature_size\": %d, "
              "\"feature_scale\": %.9g, \"feature_zero_point\": %d, \"num_classes\": %d, "
              "\"buffer_samples\": %d, \"arena_bytes\": %d}\n",
              TYBOX_INPUT_H, TYBOX_INPUT_W, TYBOX_INPUT_C, TYBOX_INPUT_SIZE,
              static_cast<double>(TYBOX_INPUT_SCALE), TYBOX_INPUT_ZERO_POINT, TYBOX_F,
              static_cast<double>(TYBOX_FEATURE_SCALE), TYBOX_FEATURE_ZERO_POINT, TYBOX_C,
              TYBOX_BUFFER_SAMPLES, TYBOX_ARENA_BYTES);
  return 0;
}

int cmd_extract(const char* in, const char* out) {
  std::vector<char> images;
  size_t n = 0;
  if (!read_records(in, TYBOX_INPUT_SIZE, &images, &n)) return 2;
  std::vector<int8_t> feats;
  extract_all(images, n, &feats);
  return write_file(out, feats.data(), feats.size()) ? 0 : 2;
}

int cmd_check(const char* in, const char* expected) {
  std::vector<char> images, want;
  size_t n = 0, m = 0;
  if (!read_records(in, TYBOX_INPUT_SIZE, &images, &n)) return 2;
  if (!read_records(expected, TYBOX_F, &want, &m)) return 2;
  if (n != m) {
    std::fprintf(stderr, "harness check: %lu images but %lu expected feature rows\n", ul(n), ul(m));
    return 2;
  }
  std::vector<int8_t> feats;
  extract_all(images, n, &feats);
  size_t bad = 0;
  for (size_t i = 0; i < feats.size(); ++i) bad += feats[i] != static_cast<int8_t>(want[i]);
  std::printf("check: %lu images, %lu of %lu int8 features differ from the reference\n", ul(n), ul(bad),
              ul(feats.size()));
  // smoke test of the learning path on the same features (labels i % C)
  if (tybox_init(TYBOX_DEFAULT_LR, TYBOX_BUFFER_SAMPLES < 4 ? TYBOX_BUFFER_SAMPLES : 4) != 0) return 1;
  for (size_t i = 0; i < n; ++i)
    if (tybox_push_and_train(feats.data() + i * TYBOX_F, static_cast<int>(i % TYBOX_C)) != 0) return 1;
  float probs[TYBOX_C];
  const int pred = tybox_predict(feats.data(), probs);
  float sum = 0.0f;
  for (int c = 0; c < TYBOX_C; ++c) sum += probs[c];
  std::printf("check: trained on %lu samples, buffer %d, prediction %d, sum(probs) = %.6f\n", ul(n),
              tybox_buffer_count(), pred, static_cast<double>(sum));
  if (sum < 0.999f || sum > 1.001f) return 1;
  return bad == 0 ? 0 : 1;
}

int cmd_stream(int argc, char** argv) {
  const char *sx = 0, *sy = 0, *ex = 0, *ey = 0, *out = 0, *init_w = 0, *w_out = 0, *pred_out = 0;
  int capacity = TYBOX_BUFFER_SAMPLES;
  float lr = TYBOX_DEFAULT_LR;
  int loss = TYBOX_DEFAULT_LOSS;
  bool features = false;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has = i + 1 < argc;
    if (a == "--features") { features = true; continue; }
    if (!has) { std::fprintf(stderr, "harness stream: %s needs a value\n", a.c_str()); return 2; }
    const char* v = argv[++i];
    if (a == "--stream-x") sx = v;
    else if (a == "--stream-y") sy = v;
    else if (a == "--eval-x") ex = v;
    else if (a == "--eval-y") ey = v;
    else if (a == "--out") out = v;
    else if (a == "--capacity") capacity = std::atoi(v);
    else if (a == "--lr") lr = static_cast<float>(std::atof(v));
    else if (a == "--init-weights") init_w = v;
    else if (a == "--weights-out") w_out = v;
    else if (a == "--eval-pred") pred_out = v;
    else if (a == "--loss") {
      const std::string l = v;
      if (l == "mse_softmax") loss = TYBOX_LOSS_MSE_SOFTMAX;
      else if (l == "cross_entropy") loss = TYBOX_LOSS_CROSS_ENTROPY;
      else { std::fprintf(stderr, "harness stream: unknown --loss %s\n", v); return 2; }
    } else { std::fprintf(stderr, "harness stream: unknown option %s\n", a.c_str()); return 2; }
  }
  if (!sx || !sy || !ex || !ey || !out) {
    std::fprintf(stderr, "harness stream: --stream-x --stream-y --eval-x --eval-y --out are required\n");
    return 2;
  }
  if (tybox_init(lr, capacity) != 0) {
    std::fprintf(stderr, "harness stream: --capacity %d outside 1..%d\n", capacity, TYBOX_BUFFER_SAMPLES);
    return 2;
  }
  tybox_set_loss(loss);
  if (init_w) {
    std::vector<char> w;
    if (!read_file(init_w, &w)) return 2;
    if (w.size() != sizeof(float) * (TYBOX_F * TYBOX_C + TYBOX_C)) {
      std::fprintf(stderr, "harness stream: %s must hold %d float32 values\n", init_w,
                   TYBOX_F * TYBOX_C + TYBOX_C);
      return 2;
    }
    const float* p = reinterpret_cast<const float*>(w.data());
    tybox_set_classifier(p, p + TYBOX_F * TYBOX_C);
  }
  const size_t rec = features ? TYBOX_F : TYBOX_INPUT_SIZE;
  std::vector<char> sraw, eraw;
  size_t ns = 0, ne = 0;
  if (!read_records(sx, rec, &sraw, &ns) || !read_records(ex, rec, &eraw, &ne)) return 2;
  std::vector<int32_t> slab, elab;
  if (!read_labels(sy, ns, &slab) || !read_labels(ey, ne, &elab)) return 2;
  std::vector<int8_t> sf, ef;
  if (features) {
    sf.assign(sraw.begin(), sraw.end());
    ef.assign(eraw.begin(), eraw.end());
  } else {
    extract_all(sraw, ns, &sf);
    extract_all(eraw, ne, &ef);  // the evaluation features are extracted once
  }
  std::FILE* csv = std::fopen(out, "w");
  if (!csv) { std::fprintf(stderr, "harness: cannot write %s\n", out); return 2; }
  std::vector<int8_t> preds((ns + 1) * ne);
  std::fprintf(csv, "step,label,pred,eval_acc\n");
  for (size_t step = 0; step <= ns; ++step) {
    int stream_pred = -1, label = -1;
    if (step > 0) {
      const int8_t* x = sf.data() + (step - 1) * TYBOX_F;
      label = slab[step - 1];
      stream_pred = tybox_predict(x, 0);  // prequential: predicted before training on it
      tybox_push_and_train(x, label);
    }
    size_t correct = 0;
    for (size_t j = 0; j < ne; ++j) {
      const int p = tybox_predict(ef.data() + j * TYBOX_F, 0);
      preds[step * ne + j] = static_cast<int8_t>(p);
      correct += p == elab[j];
    }
    std::fprintf(csv, "%lu,%d,%d,%.6f\n", ul(step), label, stream_pred,
                 static_cast<double>(correct) / static_cast<double>(ne));
  }
  if (std::fclose(csv) != 0) return 2;
  if (pred_out && !write_file(pred_out, preds.data(), preds.size())) return 2;
  if (w_out) {
    std::vector<float> w(TYBOX_F * TYBOX_C + TYBOX_C);
    std::memcpy(w.data(), tybox_classifier_weights(), sizeof(float) * TYBOX_F * TYBOX_C);
    std::memcpy(w.data() + TYBOX_F * TYBOX_C, tybox_classifier_bias(), sizeof(float) * TYBOX_C);
    if (!write_file(w_out, w.data(), w.size() * sizeof(float))) return 2;
  }
  return 0;
}


#ifdef TINYEVO_COUNTER
// A free-running 32-bit counter of the board (the MPS2 FPGAIO COUNTER, at the board's system
// clock). Under QEMU with -icount the clock is virtual and advances a fixed time per executed
// instruction, so a difference of two reads is a deterministic instruction count (times a
// constant the driver knows; the calibration loop below measures it).
#define TINYEVO_TICKS() (*reinterpret_cast<volatile uint32_t*>(TINYEVO_COUNTER))

__attribute__((noinline)) void calibration_loop(uint32_t n) {
  __asm volatile("1: subs %0, %0, #1\n bne 1b\n" : "+r"(n) : : "cc");  // 2 instructions a turn
}

// Counter ticks of: a calibration loop of 2 * 100000 instructions, tybox_extract of each image,
// tybox_predict, and tybox_push_and_train with a full buffer of 1 and of k samples (a training
// step: one SGD pass over every stored sample). Prints one JSON object.
int cmd_cost(const char* in) {
  std::vector<char> images;
  size_t n = 0;
  if (!read_records(in, TYBOX_INPUT_SIZE, &images, &n)) return 2;
  uint32_t t0 = TINYEVO_TICKS();
  calibration_loop(100000u);
  const uint32_t cal = TINYEVO_TICKS() - t0;
  std::vector<int8_t> feats(n * TYBOX_F);
  std::printf("{\"calibration_instructions\": 200000, \"calibration_ticks\": %lu, \"extract_ticks\": [",
              static_cast<unsigned long>(cal));
  for (size_t i = 0; i < n; ++i) {
    t0 = TINYEVO_TICKS();
    tybox_extract(reinterpret_cast<const int8_t*>(images.data()) + i * TYBOX_INPUT_SIZE,
                  feats.data() + i * TYBOX_F);
    const uint32_t dt = TINYEVO_TICKS() - t0;
    std::printf("%s%lu", i ? ", " : "", static_cast<unsigned long>(dt));
  }
  float probs[TYBOX_C];
  t0 = TINYEVO_TICKS();
  tybox_predict(feats.data(), probs);
  const uint32_t pred = TINYEVO_TICKS() - t0;
  // one training step with a full buffer of 1 and of k samples: the step is one loop over the
  // stored samples, so the driver extrapolates to the full buffer of TYBOX_BUFFER_SAMPLES
  uint32_t train[2] = {0, 0};
  const int k = TYBOX_BUFFER_SAMPLES < 4 ? TYBOX_BUFFER_SAMPLES : 4;
  const int caps[2] = {1, k};
  for (int c = 0; c < 2; ++c) {
    if (tybox_init(TYBOX_DEFAULT_LR, caps[c]) != 0) return 1;
    for (int j = 0; j < caps[c]; ++j) {
      t0 = TINYEVO_TICKS();
      tybox_push_and_train(feats.data() + (static_cast<size_t>(j) % n) * TYBOX_F, j % TYBOX_C);
      train[c] = TINYEVO_TICKS() - t0;  // the last one: the buffer full
    }
  }
  std::printf("], \"predict_ticks\": %lu, \"train_ticks_1\": %lu, \"train_ticks_k\": %lu, \"k\": %d, "
              "\"buffer_samples\": %d}\n", static_cast<unsigned long>(pred), static_cast<unsigned long>(train[0]),
              static_cast<unsigned long>(train[1]), k, TYBOX_BUFFER_SAMPLES);
  return 0;
}
#endif
}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "info") return cmd_info();
  if (mode == "extract" && argc == 4) return cmd_extract(argv[2], argv[3]);
  if (mode == "check" && argc == 4) return cmd_check(argv[2], argv[3]);
  if (mode == "stream") return cmd_stream(argc, argv);
#ifdef TINYEVO_COUNTER
  if (mode == "cost" && argc == 3) return cmd_cost(argv[2]);
#endif
  std::fprintf(stderr,
               "usage: harness info | extract <images.bin> <features.bin> | check <images.bin> "
               "<expected.bin> | stream --stream-x F --stream-y F --eval-x F --eval-y F --out CSV "
               "[--capacity K] [--lr LR] [--loss mse_softmax|cross_entropy] [--features] "
               "[--init-weights W] [--weights-out W] [--eval-pred P]\n");
  return 2;
}
