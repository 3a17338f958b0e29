"""pruneplug's built-in plugins, one module per family, each registered through the
``pruneplug`` entry-point group exactly as a third-party plugin would be."""
