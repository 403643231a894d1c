# Finds the TensorRT C++ headers for the plugin library; sets PAREKIT_TRT_HEADERS (a folder holding
# NvInferRuntime.h) or leaves it empty. Order: PAREKIT_TRT_INCLUDE_DIR (your TensorRT SDK's include/),
# TENSORRT_ROOT/include, system paths, then the TensorRT 10.14 headers of the PyPI package kernel-lens
# (`pip install --no-deps kernel-lens==2.0.1`; what CI compiles against), found through Python.
set(PAREKIT_TRT_HEADERS "")
if(PAREKIT_TRT_INCLUDE_DIR)
  if(NOT EXISTS "${PAREKIT_TRT_INCLUDE_DIR}/NvInferRuntime.h")
    message(FATAL_ERROR "PAREKIT_TRT_INCLUDE_DIR=${PAREKIT_TRT_INCLUDE_DIR} holds no NvInferRuntime.h")
  endif()
  set(PAREKIT_TRT_HEADERS "${PAREKIT_TRT_INCLUDE_DIR}")
else()
  find_path(PAREKIT_TRT_FOUND_HEADERS NvInferRuntime.h
            HINTS $ENV{TENSORRT_ROOT}/include ${TENSORRT_ROOT}/include PATH_SUFFIXES tensorrt)
  if(PAREKIT_TRT_FOUND_HEADERS)
    set(PAREKIT_TRT_HEADERS "${PAREKIT_TRT_FOUND_HEADERS}")
  else()
    find_package(Python3 COMPONENTS Interpreter QUIET)
    if(Python3_Interpreter_FOUND)
      execute_process(
        COMMAND ${Python3_EXECUTABLE} -c
                "import importlib.util as u, os; s = u.find_spec('kernel_lens'); print(os.path.join(os.path.dirname(s.origin), 'include', 'tensorrt') if s else '')"
        OUTPUT_VARIABLE _kl OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _rc ERROR_QUIET)
      if(_rc EQUAL 0 AND _kl AND EXISTS "${_kl}/NvInferRuntime.h")
        set(PAREKIT_TRT_HEADERS "${_kl}")
      endif()
    endif()
  endif()
endif()
if(PAREKIT_TRT_HEADERS)
  file(STRINGS "${PAREKIT_TRT_HEADERS}/NvInferVersion.h" _v REGEX "define (TRT_(MAJOR|MINOR|PATCH)_ENTERPRISE|NV_TENSORRT_(MAJOR|MINOR|PATCH)) +[0-9]+")
  string(REGEX MATCHALL "[0-9]+" _nums "${_v}")
  string(REPLACE ";" "." PAREKIT_TRT_HEADERS_VERSION "${_nums}")
  message(STATUS "parekit: TensorRT headers ${PAREKIT_TRT_HEADERS} (${PAREKIT_TRT_HEADERS_VERSION})")
endif()
