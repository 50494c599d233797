"""``python -m onegate.dev.legacy``: serve the three stand-ins until Ctrl-C or SIGTERM."""

from onegate.dev.legacy.runner import main

main()
