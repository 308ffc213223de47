"""The lifecycle as data: phases, transitions, desired/observed/status, and decide(). Pure."""
