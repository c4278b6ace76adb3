#include "relay_log.h"

#include <ctime>

namespace macula::relay {
namespace {

bool needs_quotes(std::string_view v) {
  if (v.empty()) return true;
  for (unsigned char c : v)
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f) return true;
  return false;
}

std::string timestamp() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  char buf[40];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &t);
  snprintf(buf + n, sizeof buf - n, ".%03ldZ", ts.tv_nsec / 1000000);
  return buf;
}

}  // namespace

std::string log_value(std::string_view v) {
  if (!needs_quotes(v)) return std::string(v);
  std::string out = "\"";
  for (unsigned char c : v) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < ' ' || c >= 0x7f) {
      char hex[5];
      snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

std::string log_line(std::string_view level, std::string_view event,
                     std::initializer_list<LogField> fields) {
  std::string line = "level=";
  line += level;
  line += " event=";
  line += event;
  for (const LogField& f : fields) {
    line += ' ';
    line += f.key;
    line += '=';
    line += log_value(f.value);
  }
  return line;
}

void Logger::write(std::string_view level, std::string_view event,
                   std::initializer_list<LogField> fields) {
  std::string line = "ts=" + timestamp() + " " + log_line(level, event, fields);
  std::lock_guard lock(mu_);
  if (sink_) {
    sink_(line);
    return;
  }
  line += '\n';
  fwrite(line.data(), 1, line.size(), stderr);
  fflush(stderr);
}

}  // namespace macula::relay
