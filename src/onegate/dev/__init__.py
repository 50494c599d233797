"""Development helpers: the built-in demo app and the stand-in legacy backends."""
