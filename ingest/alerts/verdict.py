"""What a rule's condition says of one reading, for every rule kind.

The judges return the plain ints (`ALARM`, `HOLD`, `CLEAR`): compiled (`compiled.py`), an int
travels unboxed where an enum member is an object; `Verdict` names them for people and tests.
"""

from enum import IntEnum
from typing import Final

CLEAR: Final = 0
HOLD: Final = 1
ALARM: Final = 2


class Verdict(IntEnum):
    CLEAR = CLEAR
    HOLD = HOLD
    ALARM = ALARM
