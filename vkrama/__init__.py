"""vkrama: build llama.cpp images per GPU stack, bench them side by side, serve the winner."""

__version__ = "0.1.0"
