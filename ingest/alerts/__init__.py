"""Alerts, beside the pipeline: rules judged on readings, one alert per episode.

`engine.py` judges (with `conditions.py` per rule kind, `lifecycle.py` its per-device state),
`rulebook.py`/`rulesfile.py` say which rules apply where (a rules file's keys in `rulekeys.py`,
its lines found by `core/toml_lines.py`, its entries built into rules by `rulebuild.py`),
`snapshot.py` carries state over restarts. What a change looks like when stored is
`storage/alert_record.py`. `compiled.py` swaps in the engine's modules compiled with mypyc when
they were built from these very sources.
"""

from ingest.alerts import compiled

compiled.activate(__path__)  # before the engine is imported, so that the right one is

from ingest.alerts.engine import (  # noqa: E402
    AcknowledgementInvalid,
    AcknowledgementRepeated,
    AlertEngine,
)

__all__ = ["AcknowledgementInvalid", "AcknowledgementRepeated", "AlertEngine"]
