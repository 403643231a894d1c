#include <iostream>
#include "parekit_host/ort_host.h"

int main(int argc, char** argv) {
  using namespace parekit_host;
  if (argc < 3) return 2;
  try {
    // argv[1]: libonnxruntime.so.<version>; argv[2]: an optimized decoder, e.g. after kv-quant{bits=4}
    auto ort = OrtRuntime::open(argv[1]);
    ModelOptions options;
    if (argc > 3) options.custom_ops_library = argv[3];  // libparekit_ort.so: native kernels
    Model model(ort, ModelSource::file(argv[2]), options);
    OrtDecoder decoder(model);                           // checks the KV I/O contract

    GenerateOptions gen;
    gen.max_new_tokens = 32;
    gen.eos_id = 2;
    Generation g = generate(decoder, {{1, 504, 3000, 25}}, gen);
    for (int64_t t : g.tokens[0]) std::cout << t << ' ';
    std::cout << "\n" << g.decode_tokens_per_s() << " tokens/s\n";

    // Encoders: token ids in, every output out (right padding, mask, token_type_ids when declared).
    // Model enc(ort, ModelSource::bytes(blob, blob_size, "minilm"));   // bytes linked into the binary
    // std::vector<HostTensor> out = enc.run(encoder_feeds(enc, {{101, 7592, 102}}));
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << "\n";  // one line: what failed and where
    return 1;
  }
  return 0;
}
