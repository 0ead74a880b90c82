"""Business rules: synchronous, called by every edge with a session."""
