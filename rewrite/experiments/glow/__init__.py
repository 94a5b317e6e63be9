"""The glow world: a contextual rule (windows glow when lit) found, probed and changed."""
