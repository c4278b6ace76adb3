# Fuzz targets. With a clang that has libFuzzer, each target is built with
# ASan + UBSan + coverage by a direct clang command (the project itself is
# built with g++) and ctest runs it for MACULA_FUZZ_SECONDS on its seeds.
# Without libFuzzer the same target runs under transport/fuzz/standalone_driver.cc
# (mutated seeds and random bytes), so its property checks run everywhere.
# Longer runs: scripts/fuzz.sh.

find_program(MACULA_CLANGXX NAMES clang++ clang++-16 clang++-15 clang++-14)
set(MACULA_LIBFUZZER OFF)
if(MACULA_CLANGXX)
  file(WRITE ${CMAKE_BINARY_DIR}/fuzz-probe.cc
    "#include <cstdint>\n#include <cstddef>\nextern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
  execute_process(
    COMMAND ${MACULA_CLANGXX} -fsanitize=fuzzer ${CMAKE_BINARY_DIR}/fuzz-probe.cc
            -o ${CMAKE_BINARY_DIR}/fuzz-probe
    RESULT_VARIABLE probe_result OUTPUT_QUIET ERROR_QUIET)
  if(probe_result EQUAL 0)
    set(MACULA_LIBFUZZER ON)
  endif()
endif()
if(MACULA_LIBFUZZER)
  message(STATUS "fuzzers: libFuzzer with ${MACULA_CLANGXX}")
else()
  message(STATUS "fuzzers: no libFuzzer, randomized driver instead")
endif()
pkg_get_variable(MACULA_GNUTLS_LIBDIR gnutls libdir)
set(MACULA_FUZZ_SECONDS 20 CACHE STRING "seconds each fuzz target runs in ctest")
set(MACULA_FUZZ_DRIVER ${CMAKE_CURRENT_LIST_DIR}/../transport/fuzz/standalone_driver.cc)

# macula_fuzzer(NAME <name> SEEDS <dir> MAX_LEN <n> SOURCES <files...>
#               [INCLUDES <dirs...>] [DEPENDS <targets or files...>])
# Builds build/fuzz/macula_<name>_fuzzer and adds the ctest fuzz.<name>.
# New inputs go into a scratch corpus in the build tree, never into SEEDS.
function(macula_fuzzer)
  cmake_parse_arguments(F "" "NAME;SEEDS;MAX_LEN" "SOURCES;INCLUDES;DEPENDS" ${ARGN})
  set(out_dir ${CMAKE_BINARY_DIR}/fuzz)
  set(bin ${out_dir}/macula_${F_NAME}_fuzzer)
  set(work ${out_dir}/work-${F_NAME})
  set(includes)
  foreach(dir ${F_INCLUDES})
    list(APPEND includes -I${dir})
  endforeach()
  if(MACULA_LIBFUZZER)
    add_custom_command(OUTPUT ${bin}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
      COMMAND ${MACULA_CLANGXX} -std=c++20 -O1 -g
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
              ${includes} ${F_SOURCES} -L${MACULA_GNUTLS_LIBDIR} -lgnutls -o ${bin}
      DEPENDS ${F_SOURCES} ${F_DEPENDS}
      COMMENT "Building the ${F_NAME} fuzzer with clang")
    add_custom_target(macula_${F_NAME}_fuzzer ALL DEPENDS ${bin})
    add_test(NAME fuzz.${F_NAME}
      COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=1
              sh -c "rm -rf '${work}' && mkdir -p '${work}' && exec '${bin}' '${work}' '${F_SEEDS}' -max_total_time=${MACULA_FUZZ_SECONDS} -max_len=${F_MAX_LEN} -rss_limit_mb=1024 -timeout=10 -print_final_stats=1")
  else()
    add_executable(macula_${F_NAME}_fuzz_random ${F_SOURCES} ${MACULA_FUZZ_DRIVER})
    target_include_directories(macula_${F_NAME}_fuzz_random PRIVATE ${F_INCLUDES})
    target_link_libraries(macula_${F_NAME}_fuzz_random PRIVATE PkgConfig::QUIC)
    add_test(NAME fuzz.${F_NAME} COMMAND macula_${F_NAME}_fuzz_random ${F_SEEDS} --runs 300000)
  endif()
  set_tests_properties(fuzz.${F_NAME} PROPERTIES TIMEOUT 300)
endfunction()
