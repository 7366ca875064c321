"""Button edges -> actions, with an optional long-press action per button (ROS-free).

A SpaceMouse Compact/Wireless has two buttons, so each button carries a short and a long action: a
button without a long action fires on press (no added latency for the gripper); one with a long action
fires its short action on release, or its long action as soon as the hold reaches `long_press_s`.
"""

from __future__ import annotations

ACTIONS = ("", "gripper_toggle", "gripper_open", "gripper_close", "episode_toggle", "episode_start",
           "episode_stop", "episode_success", "episode_failure", "episode_discard")


class ButtonMapper:
    def __init__(self, short: tuple[str, ...], long: tuple[str, ...] = (), long_press_s: float = 1.0) -> None:
        for a in (*short, *long):
            if a not in ACTIONS:
                raise ValueError(f"unknown button action {a!r}; expected one of {', '.join(ACTIONS[1:])}")
        if len(long) > len(short):
            raise ValueError("long_press has more entries than buttons")
        if long_press_s <= 0:
            raise ValueError("long_press_s must be > 0")
        self.short = tuple(short)
        self.long = tuple(long) + ("",) * (len(short) - len(long))
        self.long_press_s = long_press_s
        self._pressed_at: list[float | None] = [None] * len(short)
        self._long_fired = [False] * len(short)

    def update(self, buttons: tuple[int, ...] | list[int], t: float) -> list[str]:
        """New button states (extra buttons beyond the configured ones are ignored)."""
        out = self.poll(t)
        for i in range(len(self.short)):
            down = i < len(buttons) and bool(buttons[i])
            was = self._pressed_at[i] is not None
            if down and not was:
                self._pressed_at[i], self._long_fired[i] = t, False
                if not self.long[i] and self.short[i]:
                    out.append(self.short[i])
            elif not down and was:
                if self.long[i] and not self._long_fired[i] and self.short[i]:
                    out.append(self.short[i])
                self._pressed_at[i] = None
        return out

    def poll(self, t: float) -> list[str]:
        """Long presses that reached their threshold by time t (call regularly while buttons are held)."""
        out = []
        for i, since in enumerate(self._pressed_at):
            if since is not None and self.long[i] and not self._long_fired[i] and t - since >= self.long_press_s:
                self._long_fired[i] = True
                out.append(self.long[i])
        return out
