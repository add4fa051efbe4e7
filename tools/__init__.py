"""What developers run against the Pulumi program without a cluster: `python -m tools.render` (make manifests),
`python -m tools.config_reference` (make config-reference), and the runner both use, which runs a stack under
Pulumi's mocks (tools.mock_stack; tests/infra runs every stack through it too)."""
