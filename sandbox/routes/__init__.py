"""The sandbox's HTTP routes, one module per concern; :mod:`sandbox.app` includes them."""
