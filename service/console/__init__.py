"""The operator console (§12): the CLI's tasks in a browser, behind accounts and roles."""
