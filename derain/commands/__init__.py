"""Subcommands of the `derain` command line, one module each."""
