"""The read side: time series and alerts out of InfluxDB, as InfluxQL built from checked values.

Used by `moclo query`, by the HTTP API in `serve/`, and by the benchmarks. Every identifier and
value that reaches InfluxQL is quoted here, never pasted.
"""
