"""Node labels: the inventory on the agent's own Node object (pure computation, patch planning,
the reconciling component and the `edgeagent labels` command)."""
