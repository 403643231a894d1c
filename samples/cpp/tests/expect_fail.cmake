# Runs CMD (a ;-list) and passes when it exits non-zero with a one-line error on stderr matching REGEX.
#   cmake -DCMD="prog;arg;..." -DREGEX="..." -P expect_fail.cmake
execute_process(COMMAND ${CMD} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "expected a failure, got exit 0: ${out}")
endif()
string(REGEX MATCH "^[^\n]*" first "${err}")
if(NOT first MATCHES "^parekit-host(-trt)?: error: .*${REGEX}")
  message(FATAL_ERROR "first stderr line '${first}' does not match '${REGEX}' (exit ${rc})")
endif()
message(STATUS "ok (exit ${rc}): ${first}")
