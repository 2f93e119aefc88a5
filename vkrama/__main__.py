"""`python -m vkrama` is the same as the `vkrama` console script."""

from vkrama.cli import main

main()
