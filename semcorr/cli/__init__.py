"""Where arguments become settings: flags, the one resolution, and how a script ends."""
