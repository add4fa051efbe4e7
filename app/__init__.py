"""The workflow platform's own code: API, workers and migrations, run as `python -m app <role>`."""
