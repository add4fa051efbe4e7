"""The platform's Pulumi components: one module per ComponentResource plus the helpers they share."""
