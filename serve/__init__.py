"""`moclo serve`: the HTTP API, the live stream of readings and alert changes, and the dashboard."""
