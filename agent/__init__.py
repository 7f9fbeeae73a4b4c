"""The agent service: asks the model gateway for plans and records them."""
