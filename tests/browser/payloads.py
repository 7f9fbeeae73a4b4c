"""Hostile text the console must show as text."""

# Markup that would run or restyle the page if it were ever parsed as HTML.
POLICY_PAYLOAD = "<img src=x onerror=\"window.__pwned='policy'\"><style>body{display:none}</style>"
