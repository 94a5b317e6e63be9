"""Scripting a PaintWidget (or any ipyevents Event) with the very messages the browser sends: for the
tests and the widget benchmark (metrics/bench_widget.py)."""

from __future__ import annotations

from collections.abc import Sequence

import ipyevents

__all__ = ['dispatch_dom_event', 'drag', 'key_message', 'mouse_message']


def mouse_message(kind: str, x: float, y: float, shown_size: float, buttons: int = 1, **extra) -> dict:
    """The content of the message ipyevents' browser side sends for a mouse event at (x, y) on an
    element shown shown_size px wide (relativeX/Y rounded, as the browser does)."""
    message = {'event': kind, 'relativeX': round(x), 'relativeY': round(y), 'button': 0,
               'buttons': 0 if kind == 'mouseup' else buttons, 'ctrlKey': False, 'shiftKey': False,
               'altKey': False, 'metaKey': False, 'boundingRectWidth': shown_size,
               'boundingRectHeight': shown_size, 'target': {}}
    message.update(extra)
    return message


def dispatch_dom_event(events: ipyevents.Event, message: dict) -> None:
    """Delivers `message` to an ipyevents Event as the kernel does for a comm message from the browser."""
    events._handle_msg({'content': {'data': {'method': 'custom', 'content': message}}, 'buffers': []})


def drag(events: ipyevents.Event, points: Sequence[tuple[float, float]], shown_size: float) -> None:
    """A mouse stroke through `points`: mousedown at the first, mousemove through the rest, mouseup at the last."""
    first, *rest = points
    dispatch_dom_event(events, mouse_message('mousedown', *first, shown_size))
    for point in rest:
        dispatch_dom_event(events, mouse_message('mousemove', *point, shown_size))
    dispatch_dom_event(events, mouse_message('mouseup', *points[-1], shown_size))


def key_message(key: str, **modifiers) -> dict:
    """The content ipyevents' browser side sends for a keydown of `key` (ctrlKey=True etc. as modifiers)."""
    message = {'event': 'keydown', 'key': key, 'code': key, 'ctrlKey': False, 'shiftKey': False, 'altKey': False,
               'metaKey': False, 'repeat': False, 'location': 0, 'target': {}}
    message.update(modifiers)
    return message
