"""The ``pagi`` command: it may use every service; no service imports it."""
