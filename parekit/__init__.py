"""parekit: graph-rewriting passes that make transformer inference do less work."""

from parekit.errors import ParekitError

__all__ = ["ParekitError", "__version__"]
__version__ = "0.1.0"
