// The relay's metrics in the Prometheus text exposition format (0.0.4).
// Pure function: any thread.
#pragma once

#include <string>

#include "endpoint.h"
#include "relay_server.h"

namespace macula::relay {

// Every series of the relay, labelled counters included with 0 for each
// reason the relay knows, so dashboards see them before the first event.
std::string render_prometheus(const RelayMetrics& m, const EndpointStats& e);

}  // namespace macula::relay
