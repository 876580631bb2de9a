# libbacktrace ships inside GCC's own library directory (libgcc-12-dev on
# Debian), not as a package of its own. Ask the GCC driver where it is; with
# Clang as the compiler, the gcc driver on the machine still knows.
set(KEEL_HAVE_LIBBACKTRACE OFF)
find_program(KEEL_GCC_DRIVER NAMES gcc gcc-12)
if(KEEL_GCC_DRIVER)
  execute_process(COMMAND ${KEEL_GCC_DRIVER} -print-file-name=libbacktrace.a
                  OUTPUT_VARIABLE _bt_lib OUTPUT_STRIP_TRAILING_WHITESPACE)
  execute_process(COMMAND ${KEEL_GCC_DRIVER} -print-file-name=include
                  OUTPUT_VARIABLE _bt_inc OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(IS_ABSOLUTE "${_bt_lib}" AND EXISTS "${_bt_lib}" AND EXISTS "${_bt_inc}/backtrace.h")
    set(KEEL_HAVE_LIBBACKTRACE ON)
    set(KEEL_BACKTRACE_LIBRARY "${_bt_lib}")
    # Only backtrace.h from that folder: it also holds GCC's own stddef.h etc.
    set(KEEL_BACKTRACE_INCLUDE_DIR "${PROJECT_BINARY_DIR}/backtrace-include")
    file(MAKE_DIRECTORY "${KEEL_BACKTRACE_INCLUDE_DIR}")
    file(COPY "${_bt_inc}/backtrace.h" DESTINATION "${KEEL_BACKTRACE_INCLUDE_DIR}")
  endif()
endif()
if(KEEL_HAVE_LIBBACKTRACE)
  message(STATUS "keel: stack traces with file:line from ${KEEL_BACKTRACE_LIBRARY}")
else()
  message(STATUS "keel: libbacktrace not found, stack traces use backtrace_symbols_fd")
endif()
