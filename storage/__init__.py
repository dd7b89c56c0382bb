"""Everything InfluxDB in one place, below the components that write and read it: the client
(`influx.py`, with InfluxQL quoting), the line protocol and the stored schema (`lineprotocol.py`,
`alert_record.py`), reading alert history back (`alert_history.py`), and `database.py`, a client
from the settings."""
