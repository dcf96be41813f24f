"""rankloop.bandits.policies."""
