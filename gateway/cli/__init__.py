"""The command line: run, check-config, migrate, users (main.py, users.py)."""
