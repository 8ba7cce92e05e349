"""Routing: who a person is on each channel, how they want to be reached, and notifying them down the router's chain."""
