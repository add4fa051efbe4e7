"""The HTTP layer: routes, schemas, authentication and errors."""
