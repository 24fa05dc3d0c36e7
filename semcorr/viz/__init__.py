"""Pictures: drawing primitives, figures of matches, charts, and the interactive match explorer."""
