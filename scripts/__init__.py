"""The `prelabel` command (prelabel.scripts): thin typer subcommands on top of the library; every rich table and
progress bar lives here.

Each command imports the library modules it needs inside its own function, on purpose: `prelabel --help` and
every subcommand's help start without the provider SDKs, Arrow or the tokenizer (tests/unit/test_startup.py).
"""
