"""Built-in wrapgrad plugin (being written)."""
