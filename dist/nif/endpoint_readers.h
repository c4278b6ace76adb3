// Endpoints whose socket the VM's schedulers may read, by the id the
// driver (macula_drv.cc) is opened with. A driver's start() gets nothing
// but its command string, so the NIF lists each endpoint it opens here and
// the driver looks it up. Compiled into macula_nif.so; macula_drv.so links
// that library, so both use this one list. Any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "endpoint.h"

namespace macula::readers {

// Lists `endpoint` (held weakly); returns its id (never 0).
uint64_t add(const std::shared_ptr<Endpoint>& endpoint);
void remove(uint64_t id);
// The endpoint listed under `id`, or null if there is none or it is gone.
std::shared_ptr<Endpoint> find(uint64_t id);
// Every listed endpoint still alive (the NIF's atexit handler closes them).
std::vector<std::shared_ptr<Endpoint>> all();

}  // namespace macula::readers
