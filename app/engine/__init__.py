"""The workflow engine: definitions, state transitions, tasks, and the loops that drive them."""
