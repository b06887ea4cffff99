"""The admin listener: /metrics, /healthz and /readyz, on their own port, never on the public one."""
