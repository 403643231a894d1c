// ctest cases for the ONNX Runtime backend on tiny models built in memory (tiny_onnx.h).
//
//   test_host LIBONNXRUNTIME CASE     runs one case (exit 0: passed)
//   test_host LIBONNXRUNTIME write DIR  writes tiny_decoder.onnx / tiny_encoder.onnx for the CLI tests
//
// The tiny decoder follows the KV I/O contract with two state kinds: an int8 state that grows by the new
// tokens (past.0.codes [batch, past]) and a float state of fixed shape (past.0.sum [batch, 3]). Its next
// token is (id + position + sum(mask) + sum(past codes) + sum(past.0.sum)) mod 50, so a loop that drops
// the state, shortens the mask or restarts positions yields other tokens than the reference below.
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>

#include "parekit_host/ort_host.h"
#include "tiny_onnx.h"

using namespace parekit_host;
using tiny_onnx::Attr;
using tiny_onnx::Graph;

namespace {

constexpr int64_t kVocab = 50;

std::string tiny_decoder() {
  using tiny_onnx::value_info;
  Graph g;
  g.input(value_info("input_ids", tiny_onnx::kInt64, {"batch", "seq"}))
      .input(value_info("attention_mask", tiny_onnx::kInt64, {"batch", "total"}))
      .input(value_info("position_ids", tiny_onnx::kInt64, {"batch", "seq"}))
      .input(value_info("past.0.codes", tiny_onnx::kInt8, {"batch", "past"}))
      .input(value_info("past.0.sum", tiny_onnx::kFloat, {"batch", 3}))
      .output(value_info("logits", tiny_onnx::kFloat, {"batch", "seq", kVocab}))
      .output(value_info("present.0.codes", tiny_onnx::kInt8, {"batch", "total"}))
      .output(value_info("present.0.sum", tiny_onnx::kFloat, {"batch", 3}));
  g.initializer(tiny_onnx::int64_tensor("axis1", {1}, {1}))
      .initializer(tiny_onnx::int64_tensor("vocab", {}, {kVocab}))
      .initializer(tiny_onnx::float_tensor("onehot", {2}, {0.0f, 1.0f}));
  g.node("Cast", {"input_ids"}, {"new_codes"}, {{"to", tiny_onnx::kInt8}})
      .node("Concat", {"past.0.codes", "new_codes"}, {"present.0.codes"}, {{"axis", 1}})
      .node("Cast", {"past.0.codes"}, {"past_i64"}, {{"to", tiny_onnx::kInt64}})
      .node("ReduceSum", {"past_i64", "axis1"}, {"past_sum"}, {{"keepdims", 1}})
      .node("ReduceSum", {"attention_mask", "axis1"}, {"mask_sum"}, {{"keepdims", 1}})
      .node("ReduceSum", {"past.0.sum", "axis1"}, {"acc"}, {{"keepdims", 1}})
      .node("Cast", {"acc"}, {"acc_i64"}, {{"to", tiny_onnx::kInt64}})
      .node("Cast", {"input_ids"}, {"ids_f"}, {{"to", tiny_onnx::kFloat}})
      .node("ReduceSum", {"ids_f", "axis1"}, {"ids_sum"}, {{"keepdims", 1}})
      .node("Add", {"past.0.sum", "ids_sum"}, {"present.0.sum"})
      .node("Add", {"input_ids", "position_ids"}, {"t1"})
      .node("Add", {"t1", "mask_sum"}, {"t2"})
      .node("Add", {"t2", "past_sum"}, {"t3"})
      .node("Add", {"t3", "acc_i64"}, {"t4"})
      .node("Mod", {"t4", "vocab"}, {"next"})
      .node("OneHot", {"next", "vocab", "onehot"}, {"logits"});
  return g.model();
}

std::string tiny_encoder() {
  using tiny_onnx::value_info;
  Graph g;
  g.input(value_info("input_ids", tiny_onnx::kInt64, {"batch", "seq"}))
      .input(value_info("attention_mask", tiny_onnx::kInt64, {"batch", "seq"}))
      .input(value_info("token_type_ids", tiny_onnx::kInt64, {"batch", "seq"}))
      .output(value_info("hidden", tiny_onnx::kFloat, {"batch", "seq"}))
      .output(value_info("lengths", tiny_onnx::kInt64, {"batch", 1}));
  g.initializer(tiny_onnx::int64_tensor("axis1", {1}, {1}));
  g.node("Mul", {"input_ids", "attention_mask"}, {"masked"})
      .node("Add", {"masked", "token_type_ids"}, {"typed"})
      .node("Cast", {"typed"}, {"hidden"}, {{"to", tiny_onnx::kFloat}})
      .node("ReduceSum", {"attention_mask", "axis1"}, {"lengths"}, {{"keepdims", 1}});
  return g.model();
}

// The tiny decoder's greedy tokens, simulated directly (left padding, pad_id 0, no eos).
Prompts reference(const Prompts& prompts, int steps) {
  const StepFeeds f = left_pad(prompts, 0);
  Prompts out(prompts.size());
  for (std::size_t r = 0; r < prompts.size(); ++r) {
    std::vector<int64_t> fed(f.ids.begin() + static_cast<long>(r * f.seq), f.ids.begin() + static_cast<long>((r
        + 1) * f.seq));
    int64_t mask_sum = static_cast<int64_t>(prompts[r].size());
    int64_t pos = static_cast<int64_t>(prompts[r].size()) - 1;
    int64_t codes = 0, acc = 0;  // sums of the state before the step
    int64_t id = fed.back();
    for (int s = 0; s < steps; ++s) {
      const int64_t next = (id + pos + mask_sum + codes + acc) % kVocab;
      out[r].push_back(next);
      for (int64_t v : fed) codes += v, acc += 3 * v;
      fed = {next};
      id = next, ++pos, ++mask_sum;
    }
  }
  return out;
}

void expect(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("FAILED: " + what);
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    expect(msg.find(needle) != std::string::npos, "error '" + msg + "' does not mention '" + needle + "'");
    expect(msg.find('\n') == std::string::npos, "error is not one line: " + msg);
    std::cout << "ok: " << msg << "\n";
    return;
  }
  throw std::runtime_error("FAILED: no error (expected one mentioning '" + needle + "')");
}

GenerateOptions opts(int max_new_tokens) {
  GenerateOptions o;
  o.max_new_tokens = max_new_tokens;
  return o;
}

HostTensor zeros(DType dtype, std::vector<int64_t> shape) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes.assign(static_cast<std::size_t>(t.numel()) * dtype_size(dtype), 0);
  return t;
}

std::map<std::string, std::function<void(const std::shared_ptr<OrtRuntime>&)>> cases() {
  std::map<std::string, std::function<void(const std::shared_ptr<OrtRuntime>&)>> c;
  static const std::string decoder_bytes = tiny_decoder();
  static const std::string encoder_bytes = tiny_encoder();
  auto decoder = [](const std::shared_ptr<OrtRuntime>& ort) {
    return Model(ort, ModelSource::bytes(decoder_bytes.data(), decoder_bytes.size(), "tiny_decoder"));
  };
  c["greedy_batch1"] = [decoder](const std::shared_ptr<OrtRuntime>& ort) {
    Model m = decoder(ort);
    OrtDecoder d(m);
    const Prompts prompts = {{3, 9, 4, 1}};
    const Generation g = generate(d, prompts, opts(7));
    expect(g.tokens == reference(prompts, 7), "batch-1 greedy tokens equal the reference");
    expect(g.decode_s.size() == 6 && g.prompt_tokens == 4, "6 decode steps after a 4-token prefill");
    // state after the last step: codes [1, 4 + 6] int8 + sum [1, 3] float32
    expect(g.state_bytes == 10 + 12, "state bytes " + std::to_string(g.state_bytes));
  };
  c["greedy_left_padded"] = [decoder](const std::shared_ptr<OrtRuntime>& ort) {
    Model m = decoder(ort);
    OrtDecoder d(m);
    const Prompts prompts = {{3, 9, 4, 1, 7}, {12, 5}};
    expect(generate(d, prompts, opts(9)).tokens == reference(prompts, 9), "left-padded batch equals the reference");
    // reset: the same decoder runs a second generation from an empty past
    expect(generate(d, {{2}}, opts(3)).tokens == reference({{2}}, 3), "a second generation starts from an empty past");
  };
  c["eos_stops_row"] = [decoder](const std::shared_ptr<OrtRuntime>& ort) {
    Model m = decoder(ort);
    OrtDecoder d(m);
    const Prompts ref = reference({{3, 9, 4, 1}}, 7);
    GenerateOptions o = opts(7);
    o.eos_id = ref[0][2];
    const Generation g = generate(d, {{3, 9, 4, 1}}, o);
    expect(g.tokens[0] == std::vector<int64_t>(ref[0].begin(), ref[0].begin() + 3), "stops after eos (included)");
  };
  c["encoder_outputs"] = [](const std::shared_ptr<OrtRuntime>& ort) {
    Model m(ort, ModelSource::bytes(encoder_bytes.data(), encoder_bytes.size(), "tiny_encoder"));
    const auto out = m.run(encoder_feeds(m, {{4, 5, 6}, {7}}));
    expect(out.size() == 2 && out[0].shape == std::vector<int64_t>({2, 3}), "hidden is [2, 3]");
    std::vector<float> hidden(6);
    std::memcpy(hidden.data(), out[0].bytes.data(), 24);
    expect(hidden == std::vector<float>({4, 5, 6, 7, 0, 0}), "hidden: right-padded ids, pads masked");
    std::vector<int64_t> lengths(2);
    std::memcpy(lengths.data(), out[1].bytes.data(), 16);
    expect(lengths == std::vector<int64_t>({3, 1}), "lengths from the mask");
  };
  c["feed_errors"] = [decoder](const std::shared_ptr<OrtRuntime>& ort) {
    Model m = decoder(ort);
    std::map<std::string, HostTensor> feeds = {
        {"input_ids", zeros(DType::kInt64, {1, 2})},  {"attention_mask", zeros(DType::kInt64, {1, 2})},
        {"position_ids", zeros(DType::kInt64, {1, 2})}, {"past.0.codes", zeros(DType::kInt8, {1, 0})},
        {"past.0.sum", zeros(DType::kFloat32, {1, 3})}};
    expect(m.run(feeds).size() == 3, "valid feeds run");
    auto with = [&](const std::string& name, HostTensor t) {
      auto f = feeds;
      f[name] = std::move(t);
      return f;
    };
    expect_error([&] { m.run(with("input_idz", zeros(DType::kInt64, {1, 2}))); }, "unknown input 'input_idz'");
    expect_error([&] { m.run(with("past.0.codes", zeros(DType::kFloat32, {1, 0}))); }, "'past.0.codes' is float32");
    expect_error([&] { m.run(with("input_ids", zeros(DType::kInt64, {2}))); }, "has rank 1");
    expect_error([&] { m.run(with("past.0.sum", zeros(DType::kFloat32, {1, 4}))); }, "dim 1 is 4");
    auto missing = feeds;
    missing.erase("position_ids");
    expect_error([&] { m.run(missing); }, "no feed for input position_ids");
  };
  c["load_errors"] = [](const std::shared_ptr<OrtRuntime>& ort) {
    expect_error([&] { Model(ort, ModelSource::file("/nonexistent/model.onnx")); }, "no such model file");
    const std::string junk = "not a model";
    expect_error([&] { Model(ort, ModelSource::bytes(junk.data(), junk.size(), "junk")); }, "cannot load junk");
    ModelOptions o;
    o.custom_ops_library = "/nonexistent/libparekit_ort.so";
    expect_error([&] { Model(ort, ModelSource::bytes(decoder_bytes.data(), decoder_bytes.size()), o); },
        "no such file");
    Model enc(ort, ModelSource::bytes(encoder_bytes.data(), encoder_bytes.size(), "tiny_encoder"));
    expect_error([&] { OrtDecoder d(enc); }, "none of input_ids, attention_mask, position_ids, start, past*");
    expect_error([&] { OrtRuntime::open("/nonexistent/libonnxruntime.so.1"); }, "already loaded");
  };
  c["options_errors"] = [decoder](const std::shared_ptr<OrtRuntime>& ort) {
    Model m = decoder(ort);
    OrtDecoder d(m);
    expect_error([&] { generate(d, {{1}}, opts(0)); }, "max_new_tokens must be >= 1");
    expect_error([&] { generate(d, {{1}, {}}, opts(2)); }, "prompt 1 is empty");
    expect_error([&] { parse_ids("1,x", "--ids"); }, "not a comma-separated list");
  };
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: test_host LIBONNXRUNTIME CASE | write DIR\n";
    return 2;
  }
  try {
    if (std::string(argv[2]) == "write") {
      if (argc < 4) throw Error("write needs a folder");
      std::ofstream(std::string(argv[3]) + "/tiny_decoder.onnx", std::ios::binary) << tiny_decoder();
      std::ofstream(std::string(argv[3]) + "/tiny_encoder.onnx", std::ios::binary) << tiny_encoder();
      return 0;
    }
    auto all = cases();
    auto it = all.find(argv[2]);
    if (it == all.end()) throw Error(std::string("unknown case ") + argv[2]);
    it->second(OrtRuntime::open(argv[1]));
    std::cout << argv[2] << ": passed\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
