# Runs the demo and checks what it printed: cmake -DDEMO=<path> -P this file.
# The demo checks its own results and exits non-zero when one is wrong; this
# also checks the narration and the crash report the child wrote to stderr.

execute_process(COMMAND ${DEMO}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}")
message("--- stderr ---\n${err}")

if(NOT rc STREQUAL "0")
  message(FATAL_ERROR "keel_demo exited with '${rc}', not 0")
endif()

set(expect_stdout
  "recovered: runtime error: invalid memory address or nil pointer dereference"
  "kind nil-dereference, SIGSEGV at address 0x28"
  "recovered: runtime error: integer divide by zero"
  "recovered: runtime error: stack overflow"
  "deferred in handle_request: request buffer freed"
  "deferred in serve: listener closed"
  "child exited with status 2, as Go would")
foreach(s ${expect_stdout})
  string(FIND "${out}" "${s}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "keel_demo's stdout lacks \"${s}\"")
  endif()
endforeach()

# The child's crash report: the panic line, then the stack down to serve().
foreach(s "panic: malformed header at line 3: missing ':'" "parse_header" "serve")
  string(FIND "${err}" "${s}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "the crash report on stderr lacks \"${s}\"")
  endif()
endforeach()
