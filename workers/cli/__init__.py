"""The `relous` command line (CONTRACT.md, "CLI"): the top floor, one module per group.

Exit codes: 0 success, 1 a check failed (or the command could not do its job: database or
broker unreachable, database not migrated, no such campaign), 2 bad usage. Errors go to
stderr in one line that says what to do (`common.RelousGroup`); `relous --traceback`
shows where an unexpected one came from. Raw phone numbers are never printed.
"""

from __future__ import annotations

import click

from workers.cli import (
    budgets,
    campaigns,
    db,
    demo,
    evidence,
    explain,
    parked,
    queues,
    rules,
    senders,
    sending,
    status,
    storm,
    templates,
)
from workers.cli.common import RelousGroup


@click.group(cls=RelousGroup)
@click.option("--traceback", "show_traceback", is_flag=True,
              help="On an unexpected error, show the Python traceback (to report a bug).")
def main(show_traceback: bool) -> None:
    """anti-relous: a fake phone number that answers once, cheaply, and survives floods."""


for command in (db.db, db.keys, campaigns.campaign, templates.template, budgets.budget,
                senders.sender, status.status, evidence.evidence, evidence.purge_command,
                parked.parked_group, queues.queues, rules.rules_group,
                sending.sending_group, explain.explain, storm.storm, demo.demo):
    main.add_command(command)
