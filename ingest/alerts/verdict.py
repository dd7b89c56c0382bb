"""What a rule's condition says of one reading, for every rule kind."""

from enum import IntEnum


class Verdict(IntEnum):
    CLEAR = 0
    HOLD = 1
    ALARM = 2
