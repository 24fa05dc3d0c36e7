"""Images, the pair record, datasets by name, and the pixel <-> input <-> patch geometry."""
