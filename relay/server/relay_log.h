// Structured logs of the relay: one line per event,
// `ts=<RFC 3339 UTC> level=<level> event=<name> key=value ...`, values
// quoted when they contain spaces, quotes or control bytes (which are
// escaped, so a hostile node name cannot forge lines).
// Thread-safe: any thread may log.
#pragma once

#include <cstdio>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>

namespace macula::relay {

struct LogField {
  std::string_view key;
  std::string value;
};

// A value as it appears in a line: bare if safe, else quoted and escaped.
std::string log_value(std::string_view v);
// The line for one event, without the timestamp and without a newline.
std::string log_line(std::string_view level, std::string_view event,
                     std::initializer_list<LogField> fields);

class Logger {
 public:
  // Writes to stderr.
  Logger() = default;
  // Hands each finished line (timestamp included, no newline) to `sink`.
  explicit Logger(std::function<void(const std::string&)> sink)
      : sink_(std::move(sink)) {}

  void info(std::string_view event, std::initializer_list<LogField> fields) {
    write("info", event, fields);
  }
  void warn(std::string_view event, std::initializer_list<LogField> fields) {
    write("warn", event, fields);
  }
  void error(std::string_view event, std::initializer_list<LogField> fields) {
    write("error", event, fields);
  }

 private:
  void write(std::string_view level, std::string_view event,
             std::initializer_list<LogField> fields);

  std::mutex mu_;
  std::function<void(const std::string&)> sink_;
};

}  // namespace macula::relay
