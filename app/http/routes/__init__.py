"""One router per resource: operations (health, metrics), workflows, runs, dead letters, API keys, run events."""
