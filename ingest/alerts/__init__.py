"""Alerts, beside the pipeline: rules judged on readings, one alert per episode.

`engine.py` judges (with `conditions.py` per rule kind), `record.py` is what a change looks
like, `rulebook.py`/`rulesfile.py` say which rules apply where, `snapshot.py` carries state over
restarts.
"""

from ingest.alerts.engine import AckError, AlertEngine
from ingest.alerts.record import Alert, AlertState, alert_id

__all__ = ["AckError", "Alert", "AlertEngine", "AlertState", "alert_id"]
