"""The `launchyard` command line: one module per command group."""
