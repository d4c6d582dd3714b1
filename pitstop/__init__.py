"""pitstop: a model-serving system with a registry, hot swaps and the Open Inference Protocol."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pitstop")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
