#include "log_limit.h"

namespace macula::relay {

void LogLimit::info(std::string_view reason, uint64_t now_ms, std::string_view event,
                    std::initializer_list<LogField> fields) {
  if (admit(reason, now_ms)) log_.info(event, fields);
}

void LogLimit::warn(std::string_view reason, uint64_t now_ms, std::string_view event,
                    std::initializer_list<LogField> fields) {
  if (admit(reason, now_ms)) log_.warn(event, fields);
}

bool LogLimit::admit(std::string_view reason, uint64_t now_ms) {
  std::lock_guard lock(mu_);
  uint64_t window = now_ms / interval_ms_ + 1;
  if (window != window_) {
    summarize_locked();
    window_ = window;
    logged_ = 0;
  }
  auto total = totals_.find(reason);
  if (total == totals_.end()) total = totals_.emplace(std::string(reason), 0).first;
  ++total->second;
  if (logged_ < burst_) {
    ++logged_;
    return true;
  }
  auto left = unlogged_.find(reason);
  if (left == unlogged_.end()) left = unlogged_.emplace(std::string(reason), 0).first;
  ++left->second;
  return false;
}

void LogLimit::tick(uint64_t now_ms) {
  std::lock_guard lock(mu_);
  if (now_ms / interval_ms_ + 1 != window_) summarize_locked();
}

// Called with mu_ held; the logger has its own lock and never calls back.
void LogLimit::summarize_locked() {
  if (unlogged_.empty()) return;
  uint64_t sum = 0;
  std::string by_reason;
  for (const auto& [reason, n] : unlogged_) {
    sum += n;
    by_reason += (by_reason.empty() ? "" : ",") + reason + ":" + std::to_string(n);
  }
  log_.warn("unidentified_summary", {{"not_logged", std::to_string(sum)},
                                     {"interval_ms", std::to_string(interval_ms_)},
                                     {"by_reason", by_reason}});
  unlogged_.clear();
}

std::map<std::string, uint64_t> LogLimit::counts() const {
  std::lock_guard lock(mu_);
  return {totals_.begin(), totals_.end()};
}

}  // namespace macula::relay
