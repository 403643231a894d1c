# TensorRT backend (filled below)
