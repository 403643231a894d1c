# The TensorRT backend (parekit-host-trt): ON when TensorRT headers and the CUDA toolkit are found.
# Headers come from the native build's finder (PAREKIT_TRT_INCLUDE_DIR, TENSORRT_ROOT/include, system
# paths, then PyPI kernel-lens's TensorRT 10.14). libnvinfer is not linked: the host dlopens it at run
# time, so this also compile-checks where no TensorRT library exists. CUDA: the toolkit's cudart.
include("${PAREKIT_REPO_ROOT}/native/cmake/TrtHeaders.cmake")
find_package(CUDAToolkit QUIET)
if(PAREKIT_TRT_HEADERS AND CUDAToolkit_FOUND)
  set(_trt_default ON)
else()
  set(_trt_default OFF)
endif()
option(PAREKIT_HOST_BUILD_TRT "Build the TensorRT backend (needs TensorRT headers and the CUDA toolkit)" ${_trt_default})
if(NOT PAREKIT_HOST_BUILD_TRT)
  message(STATUS "parekit host: TensorRT backend off (TensorRT headers: '${PAREKIT_TRT_HEADERS}', CUDA toolkit found: "
                 "${CUDAToolkit_FOUND})")
  return()
endif()
if(NOT PAREKIT_TRT_HEADERS OR NOT CUDAToolkit_FOUND)
  message(FATAL_ERROR "PAREKIT_HOST_BUILD_TRT needs TensorRT headers (PAREKIT_TRT_INCLUDE_DIR or TENSORRT_ROOT) and the "
                      "CUDA toolkit (CUDAToolkit_ROOT)")
endif()
add_library(parekit_host_trt STATIC src/trt_host.cpp)
target_include_directories(parekit_host_trt SYSTEM PUBLIC ${PAREKIT_TRT_HEADERS} ${CUDAToolkit_INCLUDE_DIRS})
target_link_libraries(parekit_host_trt PUBLIC parekit_host_core CUDA::cudart ${CMAKE_DL_LIBS} PRIVATE parekit_host_warnings)
add_executable(parekit-host-trt src/main_trt.cpp)
target_link_libraries(parekit-host-trt PRIVATE parekit_host_trt parekit_host_warnings)
target_link_options(parekit-host-trt PRIVATE -Wl,--no-undefined)
message(STATUS "parekit host: TensorRT backend against ${PAREKIT_TRT_HEADERS} (${PAREKIT_TRT_HEADERS_VERSION}), "
               "CUDA ${CUDAToolkit_VERSION}")
