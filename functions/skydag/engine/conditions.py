"""A task's ``when:`` condition, judged once its upstreams let it run (DAG file v1.1).

The service renders the condition (it has the template context: upstream outputs, task
state); the engine decides what the rendered text means, so one table says which words
are true and which are false, and anything else fails the task with a reason instead of
guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

# Compared case-insensitively, surrounding blanks ignored. JSON, YAML and Python spell
# booleans differently; a template may render any of them (`{{ x > 3 }}` gives "True").
TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
FALSE_WORDS = frozenset({"false", "no", "off", "0", "", "none", "null"})
_SHOWN = 80


@dataclass(frozen=True, slots=True)
class Condition:
    """A rendered ``when:``: whether it holds, or why it could not be judged."""

    holds: bool
    text: str
    error: str | None = None

    @classmethod
    def failed(cls, error: str) -> Condition:
        """The condition could not be rendered (a template error, over a limit)."""
        return cls(False, "", error)

    @property
    def reason(self) -> str:
        """The task's reason when the condition decides it (skipped, or failed)."""
        if self.error is not None:
            return f"when: {self.error}"
        return f"when: {_shown(self.text)} is {'true' if self.holds else 'false'}"


def judge_condition(rendered: str | bool) -> Condition:
    """What a rendered condition means: a literal ``true``/``false`` (or yes/no, on/off,
    1/0; empty, none and null are false). Other text is an error, not a truthy string:
    ``"False "`` from a template must not run a task by accident."""
    if isinstance(rendered, bool):
        return Condition(rendered, str(rendered).lower())
    word = rendered.strip().lower()
    if word in TRUE_WORDS:
        return Condition(True, rendered)
    if word in FALSE_WORDS:
        return Condition(False, rendered)
    return Condition.failed(
        f"rendered {_shown(rendered)}, which is neither true nor false "
        "(true, yes, on, 1 / false, no, off, 0, none, null or empty)"
    )


def _shown(text: str) -> str:
    return repr(text if len(text) <= _SHOWN else text[:_SHOWN] + "...")
