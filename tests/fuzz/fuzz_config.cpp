// parse_config: any text must give either a config or errors, never a crash.
// Checks: exactly one of config / errors; every error names the source and
// a position ("fuzz.toml:LINE:COL: ..."); a config has at least one
// listener, exactly one upstream, and no port 0.
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/config.h"
#include "fuzz_util.h"

using popbridge::fuzz::show;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const popbridge::ConfigResult result = popbridge::parse_config(text, "fuzz.toml");
  FUZZ_CHECK(result.config.has_value() == result.errors.empty(), "config %d with %zu errors",
             result.config.has_value(), result.errors.size());
  for (const std::string& error : result.errors) {
    FUZZ_CHECK(error.rfind("fuzz.toml:", 0) == 0, "error without source: %s", show(error).c_str());
    // FILE:LINE:COL: with LINE and COL at least 1.
    size_t pos = 10;
    for (int field = 0; field < 2; ++field) {
      size_t digits = 0;
      while (pos < error.size() && error[pos] >= '0' && error[pos] <= '9') ++pos, ++digits;
      FUZZ_CHECK(digits > 0 && pos < error.size() && error[pos] == ':', "bad position: %s",
                 show(error).c_str());
      ++pos;
    }
  }
  if (result.config) {
    const popbridge::Config& c = *result.config;
    FUZZ_CHECK(!c.listeners.empty(), "config without listeners");
    FUZZ_CHECK(c.upstreams.size() == 1, "%zu upstreams", c.upstreams.size());
    for (const auto& l : c.listeners) FUZZ_CHECK(l.port != 0 && !l.host.empty(), "listener port 0");
    FUZZ_CHECK(c.upstreams[0].port != 0, "upstream port 0");
    FUZZ_CHECK(c.server.idle_timeout.count() > 0, "idle_timeout %lld",
               static_cast<long long>(c.server.idle_timeout.count()));
  }
  return 0;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  popbridge::log::set_level(popbridge::log::Level::kError);
  return 0;
}
