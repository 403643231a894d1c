// parekit-host: runs a (parekit-optimized) ONNX model through ONNX Runtime from C++.
//
//   parekit-host info MODEL                         inputs and outputs
//   parekit-host encode MODEL --ids 1,2 --ids 3 [--out DIR]      encoder outputs as DIR/<output>.npy
//   parekit-host generate MODEL --ids 1,2,3 [--max-new-tokens N] [--json]   greedy decoding (KV contract)
//
// Common options: --ort LIB (libonnxruntime.so.<version>), --custom-ops LIB (libparekit_ort.so),
// --threads N, --no-optimize, --from-memory (load the model from bytes, as an embedding program does),
// --warmup (generate once untimed first).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>

#include "cli.h"
#include "parekit_host/ort_host.h"

using namespace parekit_host;

namespace {

const char* kUsage =
    "usage: parekit-host info|encode|generate MODEL [--ids 1,2,3]... [--max-new-tokens N] [--pad-id ID]\n"
    "       [--eos-id ID] [--out DIR] [--json] [--ort LIB] [--custom-ops LIB] [--threads N] [--no-optimize]\n"
    "       [--from-memory] [--warmup]\n";

std::vector<char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": no such model file");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

int info(Model& model, const OrtRuntime& ort) {
  std::cout << "onnxruntime " << ort.version() << " (" << ort.path() << "), C API " << ORT_API_VERSION << "\n";
  for (const auto& s : model.inputs()) std::cout << "input  " << s.describe() << "\n";
  for (const auto& s : model.outputs()) std::cout << "output " << s.describe() << "\n";
  return 0;
}

int encode(Model& model, const Args& args) {
  const auto feeds = encoder_feeds(model, args.prompts(), args.integer("--pad-id", 0));
  const auto outputs = model.run(feeds);
  const std::string dir = args.get("--out");
  std::string json = "{\"outputs\":[";
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const auto& spec = model.outputs()[i];
    std::string shape;
    for (int64_t d : outputs[i].shape) shape += (shape.empty() ? "" : ",") + std::to_string(d);
    std::string file;
    if (!dir.empty()) {
      file = dir + "/" + spec.name + ".npy";
      write_npy(file, outputs[i]);
    }
    json += std::string(i ? "," : "") + "{\"name\":" + json_string(spec.name) + ",\"dtype\":\"" +
            dtype_name(outputs[i].dtype) + "\",\"shape\":[" + shape + "],\"file\":" + json_string(file) + "}";
    if (!args.flag("--json")) std::cout << spec.name << " " << dtype_name(outputs[i].dtype) << " [" << shape << "] " << file << "\n";
  }
  if (args.flag("--json")) std::cout << json << "]}\n";
  return 0;
}

int run(int argc, char** argv) {
  const Args args(argc, argv,
                  {"--ids", "--max-new-tokens", "--pad-id", "--eos-id", "--out", "--ort", "--custom-ops", "--threads"},
                  {"--json", "--no-optimize", "--from-memory", "--warmup"});
  if (args.command != "info" && args.command != "encode" && args.command != "generate") {
    throw Error("unknown command '" + args.command + "' (info, encode, generate)");
  }
  const GenerateOptions gen = args.generate_options();  // validated before the (slow) model load
  ModelOptions options;
  options.custom_ops_library = args.get("--custom-ops");
  const long long threads = args.integer("--threads", 0);
  if (threads < 0 || threads > 1024) throw Error("--threads must be in [0, 1024], got " + std::to_string(threads));
  options.threads = static_cast<int>(threads);
  options.optimize = !args.flag("--no-optimize");
  auto ort = OrtRuntime::open(args.get("--ort"));
  std::vector<char> bytes;  // --from-memory: the model's bytes, alive while the session is built
  ModelSource source = ModelSource::file(args.model);
  if (args.flag("--from-memory")) {
    bytes = read_file(args.model);
    source = ModelSource::bytes(bytes.data(), bytes.size(), args.model);
  }
  Model model(ort, source, options);
  if (args.command == "info") return info(model, *ort);
  if (args.command == "encode") return encode(model, args);
  OrtDecoder decoder(model);
  if (args.flag("--warmup")) generate(decoder, args.prompts(), gen);  // untimed: first-run allocations
  const Generation g = generate(decoder, args.prompts(), gen);
  std::cout << (args.flag("--json") ? g.to_json("onnxruntime " + ort->version()) + "\n" : g.to_text());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const Error& e) {
    std::cerr << "parekit-host: error: " << e.what() << "\n";
    if (argc < 3) std::cerr << kUsage;
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "parekit-host: error: " << one_line(e.what()) << "\n";
    return 1;
  }
}
