#include "log_limit.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace macula::relay {
namespace {

struct Lines {
  std::vector<std::string> all;
  Logger log{[this](const std::string& l) { all.push_back(l); }};

  size_t count(const std::string& text) const {
    size_t n = 0;
    for (const auto& l : all) n += l.find(text) != std::string::npos;
    return n;
  }
};

TEST(LogLimit, FirstLinesInFullThenOneSummaryPerInterval) {
  Lines lines;
  LogLimit limit(lines.log, 3, 1000);
  for (int i = 0; i < 8; ++i)
    limit.warn("bad_proof", 10, "connection_refused", {{"conn", std::to_string(i)}});
  limit.info("accepted", 20, "connection_accepted", {});
  limit.info("accepted", 30, "connection_accepted", {});
  EXPECT_EQ(lines.all.size(), 3u);
  limit.tick(999);  // the interval is not over
  EXPECT_EQ(lines.all.size(), 3u);
  limit.tick(1000);
  ASSERT_EQ(lines.all.size(), 4u);
  EXPECT_NE(lines.all[3].find("event=unidentified_summary not_logged=7"), std::string::npos)
      << lines.all[3];
  EXPECT_NE(lines.all[3].find("by_reason=accepted:2,bad_proof:5"), std::string::npos)
      << lines.all[3];
  limit.tick(1500);  // one summary per interval
  EXPECT_EQ(lines.all.size(), 4u);
  auto counts = limit.counts();
  EXPECT_EQ(counts["bad_proof"], 8u);
  EXPECT_EQ(counts["accepted"], 2u);
}

TEST(LogLimit, EachIntervalHasItsOwnBudget) {
  Lines lines;
  LogLimit limit(lines.log, 2, 1000);
  for (int i = 0; i < 5; ++i) limit.warn("x", 100, "e", {});
  // The next interval's first event writes the last one's summary first.
  for (int i = 0; i < 2; ++i) limit.warn("x", 1100, "e", {});
  EXPECT_EQ(lines.count("event=e"), 4u);
  EXPECT_EQ(lines.count("unidentified_summary not_logged=3"), 1u);
  limit.tick(2000);  // nothing was left out in the second interval
  EXPECT_EQ(lines.count("unidentified_summary"), 1u);
  EXPECT_EQ(limit.counts()["x"], 7u);
}

TEST(LogLimit, BoundedLinesUnderAFlood) {
  Lines lines;
  LogLimit limit(lines.log);  // the relay's own burst and interval
  uint64_t now = 0;
  for (int i = 0; i < 100000; ++i, now += 1) {  // 100 000 events over 100 s
    limit.warn("identify_timeout", now, "connection_refused", {});
    if (i % 1000 == 0) limit.tick(now);
  }
  limit.tick(now + LogLimit::kIntervalMs);
  // 10 intervals: each at most kBurst lines and one summary.
  EXPECT_LE(lines.all.size(), 11u * (LogLimit::kBurst + 1));
  EXPECT_EQ(limit.counts()["identify_timeout"], 100000u);
}

}  // namespace
}  // namespace macula::relay
