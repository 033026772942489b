"""The ``fct`` subcommands' implementations, one module per command, each with ``run(args)``.

``fct_registry.cli`` parses and checks the arguments with light imports only, then imports the
command's module here by name (``importlib``: dispatch), so a usage error never waits for torch,
MLflow or pyarrow.
"""
