"""Running the gateway: one process (serving.py), or N workers under a supervisor (supervisor.py), with
the listener that accepts for them (listener.py)."""
