# Warnings, hardening and sanitizer flags for every keel target.

set(KEEL_WARNINGS -Wall -Wextra -Wshadow -Wpointer-arith -Wformat=2 -Wundef
                  -Wstrict-prototypes -Wno-unused-parameter)
if(CMAKE_C_COMPILER_ID STREQUAL "GNU")
  # -Wclobbered finds locals that a longjmp back into a scope can corrupt.
  list(APPEND KEEL_WARNINGS -Wclobbered)
endif()
if(KEEL_WERROR)
  list(APPEND KEEL_WARNINGS -Werror)
endif()
set(KEEL_LIB_WARNINGS ${KEEL_WARNINGS} -Wmissing-prototypes)
add_compile_options(${KEEL_WARNINGS})

# Debug info everywhere: crash reports and tests read function names and lines.
add_compile_options(-g)

# _FORTIFY_SOURCE turns longjmp into __longjmp_chk; keel must pass its checks,
# so the optimised builds keep it on (it needs optimisation to work).
if(NOT KEEL_SANITIZE AND NOT CMAKE_BUILD_TYPE STREQUAL "Debug")
  add_compile_definitions(_FORTIFY_SOURCE=2)
endif()

if(KEEL_SANITIZE STREQUAL "address")
  # ASan + UBSan. UBSan aborts on the first finding; the tests that fault on
  # purpose mark their fault sites no_sanitize so UBSan cannot pre-empt them.
  set(KEEL_SAN_FLAGS -fsanitize=address,undefined -fno-sanitize-recover=undefined
                     -fno-omit-frame-pointer)
elseif(KEEL_SANITIZE STREQUAL "thread")
  set(KEEL_SAN_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
elseif(KEEL_SANITIZE STREQUAL "fuzz")
  # The libFuzzer harnesses of fuzz/ (Clang): coverage for everything, the
  # fuzzer's main only in the harnesses; ASan + UBSan catch what it finds.
  set(KEEL_SAN_FLAGS -fsanitize=fuzzer-no-link,address,undefined
                     -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
elseif(KEEL_SANITIZE)
  message(FATAL_ERROR "KEEL_SANITIZE must be '', 'address', 'thread' or 'fuzz', not '${KEEL_SANITIZE}'")
endif()
if(KEEL_SAN_FLAGS)
  add_compile_options(${KEEL_SAN_FLAGS})
  add_link_options(${KEEL_SAN_FLAGS})
endif()
