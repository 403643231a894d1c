"""samples/cpp/README.md's example is the file CMake compiles (examples/embed_decoder.cpp), verbatim."""

from __future__ import annotations

import re

from tests.cpp_host.conftest import SOURCE


def test_readme_example_is_the_compiled_file():
    readme = (SOURCE / "README.md").read_text()
    block = re.search(r"## Example: a decoder in 30 lines\n.*?```cpp\n(.*?)```", readme, re.S)
    assert block is not None, "the README lost its example section"
    assert block.group(1) == (SOURCE / "examples" / "embed_decoder.cpp").read_text()
    assert len(block.group(1).splitlines()) <= 40
