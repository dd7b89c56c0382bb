"""Alerts, beside the pipeline: rules judged on readings, one alert per episode.

`engine.py` judges (with `conditions.py` per rule kind), `rulebook.py`/`rulesfile.py` say which
rules apply where, `snapshot.py` carries state over restarts. What a change looks like when
stored is `storage/alert_record.py`.
"""

from ingest.alerts.engine import AcknowledgementInvalid, AlertEngine

__all__ = ["AcknowledgementInvalid", "AlertEngine"]
