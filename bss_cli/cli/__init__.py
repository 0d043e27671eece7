"""The command-line interface: parsing, one library call per command, and printing."""
