"""What ingest judges and does, from the settings: the rules in force (the device types'
defaults, with the rules file's on top) and the automations file. Serve and `moclo rules
check` read the same, so a file ingest refuses is refused by them too."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings
from ingest.alerts.rulebook import RuleBook
from ingest.automations.runner import Automations


def load_rulebook(settings: Settings) -> RuleBook:
    """The rules in force: the device types' defaults, with the rules file's on top."""
    if settings.rules_file is None:
        return RuleBook()
    from ingest.alerts.rulesfile import load_rules_file

    return load_rules_file(Path(settings.rules_file))


def load_automations(settings: Settings, rulebook: RuleBook) -> Automations | None:
    """The automations file's automations, each checked against the rules in force: one
    whose rule no device of its type and tenant has would never act (AutomationsFileError)."""
    if settings.automations_file is None:
        return None
    from ingest.automations.file import load_automations_file, unknown_triggers

    path = Path(settings.automations_file)
    automations = load_automations_file(path)
    unknown_triggers(automations, rulebook, str(path))
    return Automations(automations)
