"""The board sockets of `bench.disaster`: bench/_board_clients.py (same protocol over stdin/stdout, same records),
whose boards also keep the instructions (対策指示) that stream to them while the answers come in.

`bench._board_clients.Board` skips every event that is not `board.tally` and then sees the next tally's seq as a
gap, because instructions share the board stream's counter. Here an instruction is checked for its seq like a
tally and recorded among the frames as `[arrival, "instruction", <instruction id>, 0]` (0 answered: the running
count a latency is read from never moves on it), so the parent can tell them apart.

    python -m bench._disaster_clients      (driven by bench.disaster as bench.board drives bench._board_clients)
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench import _board_clients


class DisasterBoard(_board_clients.Board):
    def record(self, arrival: float, frame: dict[str, Any]) -> None:
        if (
            frame.get("type") == "event"
            and frame.get("event") == "board.instruction"
            and frame.get("stream") == (self.stream)
        ):
            seq = frame.get("seq")
            if self.last_seq is not None and seq != self.last_seq + 1:
                self.problems.append(f"seq {seq} after {self.last_seq}")
            self.last_seq = seq
            data = frame.get("data") or {}
            self.frames.append([arrival, "instruction", int(data.get("id") or 0), 0])
            return
        super().record(arrival, frame)


def main() -> None:
    _board_clients.Board = DisasterBoard  # type: ignore[misc]  # main() builds its boards from the module's name
    asyncio.run(_board_clients.main())


if __name__ == "__main__":
    main()
