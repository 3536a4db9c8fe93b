// parse_config: any text must give either a config or errors, never a crash.
// Checks: exactly one of config / errors; every error names the source and
// a position ("fuzz.toml:LINE:COL: ..."); a config has at least one
// listener and one upstream, and no port 0. UidlFormat (the input as a
// uidl_format value, and the config's): every accepted format makes RFC 1939
// unique-ids (1-70 characters 0x21-0x7E, different for different UIDs).
#include <cstddef>
#include <cstdint>
#include <string>

#include "config/config.h"
#include "config/uidl_format.h"
#include "fuzz_util.h"

using popbridge::fuzz::show;

namespace {

// RFC 1939 section 7: a unique-id is 1 to 70 characters in 0x21-0x7E; and
// within one maildrop (one UIDVALIDITY) different UIDs give different ids.
void check_uidl_format(const popbridge::UidlFormat& format, uint32_t salt) {
  static const uint32_t kValues[] = {0, 1, 9, 10, 15, 16, 255, 256, 99999, 0x7FFFFFFFu, 0xFFFFFFFFu};
  std::string previous;
  for (uint32_t uv : {0u, 1u, 0xFFFFFFFFu, salt}) {
    for (uint32_t uid : kValues) {
      for (uint32_t u : {uid, uid ^ salt}) {
        const std::string id = format.format(u, uv);
        FUZZ_CHECK(!id.empty() && id.size() <= 70, "UIDL of %zu characters: %s", id.size(),
                   show(id).c_str());
        for (char c : id)
          FUZZ_CHECK(c >= 0x21 && c <= 0x7e, "UIDL character 0x%02x in %s",
                     static_cast<unsigned char>(c), show(id).c_str());
      }
      const std::string a = format.format(uid, uv), b = format.format(uid + 1, uv);
      FUZZ_CHECK(a != b, "UIDs %u and %u share the UIDL %s", uid, uid + 1, show(a).c_str());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  uint32_t salt = 0;
  for (size_t i = 0; i < size && i < 4; ++i) salt = salt << 8 | data[i];

  // The input as a uidl_format value by itself.
  if (size <= 200) {
    std::string why;
    if (auto format = popbridge::UidlFormat::parse(text, why)) check_uidl_format(*format, salt);
    else FUZZ_CHECK(!why.empty(), "UidlFormat::parse failed without a reason");
  }

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
    FUZZ_CHECK(!c.upstreams.empty(), "config without upstreams");
    for (const auto& l : c.listeners) FUZZ_CHECK(l.port != 0 && !l.host.empty(), "listener port 0");
    for (const auto& u : c.upstreams) {
      FUZZ_CHECK(u.port != 0 && !u.host.empty() && !u.hosts.empty(), "upstream %s without address",
                 show(u.name).c_str());
      for (const auto& hp : u.hosts) FUZZ_CHECK(hp.port != 0 && !hp.host.empty(), "hosts entry port 0");
    }
    FUZZ_CHECK(c.server.idle_timeout.count() > 0, "idle_timeout %lld",
               static_cast<long long>(c.server.idle_timeout.count()));
    check_uidl_format(c.mailbox.uidl_format, salt);
  }
  return 0;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  popbridge::log::set_level(popbridge::log::Level::kError);
  return 0;
}
