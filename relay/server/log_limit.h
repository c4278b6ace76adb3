// Rate limit for the log lines that connections which have proven nothing
// yet can cause (accepted, refused or closed before identifying: a bad
// proof, a bad frame, the identify timeout, too many connections from one
// address). Whoever reaches the relay could otherwise write lines as fast
// as it can handshake. Each interval logs its first `burst` lines in full
// and only counts the rest; after an interval with lines left out, one
// summary line (event=unidentified_summary) gives their counts by reason.
// Every event is counted, logged or not (counts(): the relay's
// macula_relay_unidentified_events_total{reason}).
// Thread-safe: any thread may call.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "relay_log.h"

namespace macula::relay {

class LogLimit {
 public:
  static constexpr uint32_t kBurst = 10;
  static constexpr uint64_t kIntervalMs = 10000;

  explicit LogLimit(Logger& log, uint32_t burst = kBurst, uint64_t interval_ms = kIntervalMs)
      : log_(log), burst_(burst), interval_ms_(interval_ms) {}

  // Counts the event under `reason` and logs it (level info or warn) if
  // the interval `now_ms` falls in still has lines to spare. `now_ms`: a
  // monotonic clock in milliseconds.
  void info(std::string_view reason, uint64_t now_ms, std::string_view event,
            std::initializer_list<LogField> fields);
  void warn(std::string_view reason, uint64_t now_ms, std::string_view event,
            std::initializer_list<LogField> fields);

  // Writes the summary of an interval that is over, if it left lines out.
  // Call about once a second (events also do it).
  void tick(uint64_t now_ms);

  // Events since start by reason, logged or not.
  std::map<std::string, uint64_t> counts() const;

 private:
  bool admit(std::string_view reason, uint64_t now_ms);
  void summarize_locked();

  Logger& log_;
  const uint32_t burst_;
  const uint64_t interval_ms_;
  mutable std::mutex mu_;
  uint64_t window_ = 0;    // the interval of the last event, from 1
  uint32_t logged_ = 0;    // lines logged in it
  std::map<std::string, uint64_t, std::less<>> totals_;
  std::map<std::string, uint64_t, std::less<>> unlogged_;  // in window_
};

}  // namespace macula::relay
