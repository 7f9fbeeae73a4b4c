"""The egress proxy: a tool reaches the hosts its policy names, and nothing else.

Service side only (never imported by code that runs inside the jail). A run
with a ``[tools.NAME.network]`` table gets an empty network namespace whose
only reachable socket is the proxy's listener (:mod:`.netns_listener`); the
proxy (:mod:`.proxy`) checks every request against the run's rules
(:mod:`.rules`) and the public/private address table (:mod:`.addresses`),
connects to the exact address it checked, and reports what it decided.
See docs/egress.md.
"""
