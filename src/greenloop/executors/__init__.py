"""Built-in executor plugins: ``local`` (a private directory on this machine) and ``docker``."""
