"""Command-line parsers that accept both spellings of every long flag.

tensorflow-datasets spells its flags with underscores (``--data_dir``, ``--manual_dir``), most
tools with hyphens (``--data-dir``); a user should not have to remember which command wants
which. :class:`FlagParser` is an ``argparse.ArgumentParser`` whose every long option also
answers to its other spelling (``--data-dir`` and ``--data_dir``, ``--num_subjects`` and
``--num-subjects``); help shows the spelling the command declares, the other one is a hidden
alias. Subparsers (``add_subparsers``) are ``FlagParser``\\ s too.
"""
from __future__ import annotations

import argparse


def other_spelling(option: str) -> str | None:
    """``--data-dir`` <-> ``--data_dir``; None for short options and one-word flags."""
    if not option.startswith("--"):
        return None
    body = option[2:]
    swapped = body.replace("-", "_") if "-" in body else body.replace("_", "-")
    return None if swapped == body else "--" + swapped


class FlagParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` accepting ``--a-b`` and ``--a_b`` alike (see the module)."""

    def add_argument(self, *names, **kwargs):
        action = super().add_argument(*names, **kwargs)
        aliases = [alias for name in action.option_strings
                   if (alias := other_spelling(name)) and alias not in self._option_string_actions]
        for alias in aliases:
            self._option_string_actions[alias] = action   # same action, not listed in --help
        return action
