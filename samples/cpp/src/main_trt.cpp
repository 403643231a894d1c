// parekit-host-trt: runs a TensorRT plan of a (parekit-optimized) decoder on the GPU.
//
//   parekit-host-trt info PLAN [--plugins LIB]...                      the engine's I/O tensors
//   parekit-host-trt generate PLAN --ids 1,2,3 [--max-new-tokens N] [--json] [--plugins LIB]...
//
// --nvinfer LIB: the TensorRT runtime library (default libnvinfer.so.<major of the headers>);
// --plugins LIB: libparekit_trt_plugins.so (repeatable), loaded before the plan is deserialized.
#include <iostream>

#include "cli.h"
#include "parekit_host/trt_host.h"

using namespace parekit_host;

namespace {

int run(int argc, char** argv) {
  const Args args(argc, argv, {"--ids", "--max-new-tokens", "--pad-id", "--eos-id", "--nvinfer", "--plugins"},
                  {"--json"});
  if (args.command != "info" && args.command != "generate") throw Error("unknown command '" + args.command + "' (info, generate)");
  const GenerateOptions gen = args.generate_options();
  auto trt = TrtRuntime::open(args.get("--nvinfer"), args.all("--plugins"));
  TrtEngine engine(*trt, args.model);
  if (args.command == "info") {
    std::cout << "tensorrt headers " << NV_TENSORRT_MAJOR << "." << NV_TENSORRT_MINOR << "." << NV_TENSORRT_PATCH
              << ", library " << trt->path() << "\n";
    for (const auto& t : engine.inputs()) std::cout << "input  " << t.describe() << "\n";
    for (const auto& t : engine.outputs()) std::cout << "output " << t.describe() << "\n";
    return 0;
  }
  TrtDecoder decoder(engine);
  const Generation g = generate(decoder, args.prompts(), gen);
  std::cout << (args.flag("--json") ? g.to_json("tensorrt " + trt->path()) + "\n" : g.to_text());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "parekit-host-trt: error: " << one_line(e.what()) << "\n";
    return 1;
  }
}
