"""The `wtb` command line."""
