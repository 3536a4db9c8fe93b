// toml++'s implementation, compiled into fuzz_config with coverage and
// sanitizers. popbridge_config calls into the system libtomlplusplus.so, which
// is neither; definitions in the executable take precedence over the shared
// library's, so the TOML parser itself is fuzzed too (same version, same
// configuration macros as the library build: TOML_HEADER_ONLY=0).
#define TOML_IMPLEMENTATION 1
#include <toml++/toml.h>
