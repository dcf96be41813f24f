"""rankloop.bandits."""
