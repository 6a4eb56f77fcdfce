"""Management commands of the Moesif users Django app."""
