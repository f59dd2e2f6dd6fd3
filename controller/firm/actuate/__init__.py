"""Executors: how the controller's decisions reach the nodes."""
