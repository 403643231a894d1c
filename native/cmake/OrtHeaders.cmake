# Finds the ONNX Runtime C API headers; sets PAREKIT_ORT_HEADERS (a folder holding onnxruntime_c_api.h).
# Order: PAREKIT_ORT_INCLUDE_DIR, ONNXRUNTIME_ROOT/include, system paths, then Debian's
# libonnxruntime-dev extracted into the build tree (never installed).
if(PAREKIT_ORT_INCLUDE_DIR)
  if(NOT EXISTS "${PAREKIT_ORT_INCLUDE_DIR}/onnxruntime_c_api.h")
    message(FATAL_ERROR "PAREKIT_ORT_INCLUDE_DIR=${PAREKIT_ORT_INCLUDE_DIR} holds no onnxruntime_c_api.h")
  endif()
  set(PAREKIT_ORT_HEADERS "${PAREKIT_ORT_INCLUDE_DIR}")
else()
  find_path(PAREKIT_ORT_FOUND_HEADERS onnxruntime_c_api.h
            HINTS $ENV{ONNXRUNTIME_ROOT}/include ${ONNXRUNTIME_ROOT}/include
            PATH_SUFFIXES onnxruntime onnxruntime/core/session)
  if(PAREKIT_ORT_FOUND_HEADERS)
    set(PAREKIT_ORT_HEADERS "${PAREKIT_ORT_FOUND_HEADERS}")
  elseif(PAREKIT_FETCH_ORT_HEADERS)
    set(_dest "${CMAKE_BINARY_DIR}/_deps/onnxruntime-headers")
    if(NOT EXISTS "${_dest}/onnxruntime_c_api.h")
      message(STATUS "parekit: fetching ONNX Runtime C API headers (Debian libonnxruntime-dev)")
      execute_process(COMMAND bash "${CMAKE_CURRENT_LIST_DIR}/../../scripts/fetch_ort_headers.sh" "${_dest}"
                      RESULT_VARIABLE _rc)
      if(NOT _rc EQUAL 0)
        message(FATAL_ERROR "parekit: could not fetch the ONNX Runtime headers; set PAREKIT_ORT_INCLUDE_DIR "
                            "to the include folder of an ONNX Runtime SDK")
      endif()
    endif()
    set(PAREKIT_ORT_HEADERS "${_dest}")
  else()
    message(FATAL_ERROR "parekit: no onnxruntime_c_api.h found; set PAREKIT_ORT_INCLUDE_DIR or turn on "
                        "PAREKIT_FETCH_ORT_HEADERS")
  endif()
endif()
file(STRINGS "${PAREKIT_ORT_HEADERS}/onnxruntime_c_api.h" _api_line REGEX "^#define ORT_API_VERSION [0-9]+")
string(REGEX REPLACE "^#define ORT_API_VERSION ([0-9]+).*" "\\1" PAREKIT_ORT_API_VERSION "${_api_line}")
message(STATUS "parekit: ONNX Runtime headers ${PAREKIT_ORT_HEADERS} (C API ${PAREKIT_ORT_API_VERSION})")
