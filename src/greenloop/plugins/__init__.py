"""Plugins: the executor interface, discovery through entry points, and out-of-process hosting."""
