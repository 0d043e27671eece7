"""The command-line interface: the thin Typer layer.

Owns parsing, one library call per command, and printing (rich tables, progress, ``error: ...``
and exit codes). No math lives here. May import every layer below it; nothing imports the CLI.
Subcommands import their heavy libraries inside the command, so ``bss --help`` loads no torch.
"""
