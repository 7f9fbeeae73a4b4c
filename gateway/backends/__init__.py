"""Model backends: the local planner and OpenAI-compatible servers."""
