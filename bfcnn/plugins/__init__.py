"""The built-in components. Each module is an ordinary plugin: it implements the `register_*` hooks."""
