"""Abusive senders' messages for a complaint, and retention."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import TextIO

import click

from shared.store import evidence as store
from shared.store.campaigns import find_campaign
from workers import housekeeping
from workers.cli.common import USAGE, fail, iso, load_settings, open_database, parse_number


@click.group()
def evidence() -> None:
    """Abusive senders' messages, for a complaint."""


@evidence.command("export")
@click.option("--campaign", "number", required=True, help="The campaign's number.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default="1970-01-01",
              help="First day (YYYY-MM-DD, UTC).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, writable=True),
              help="File to write: .json for JSON, anything else for CSV.")
def evidence_export(number: str, since: datetime, out: str) -> None:
    """Write the messages of senders flagged abusive, with their numbers (only here)."""
    import csv
    import json

    from cryptography.fernet import InvalidToken

    from shared.vault import fernet as evidence_fernet

    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        fail(f"--out: there is no folder {folder}: create it or write elsewhere", USAGE)
    settings = load_settings(require_keys=True)
    with open_database().transaction() as tx:
        found = find_campaign(tx, parse_number(number))
        if found is None:
            fail(f"no campaign answers on {number}: see `relous campaign list`")
        rows = store.evidence_messages(tx, found.id, since.replace(tzinfo=UTC))
    fernet = evidence_fernet(settings.evidence_key)
    records = []
    for row in rows:
        try:
            sender_number = fernet.decrypt(row["encrypted_number"].encode()).decode()
        except InvalidToken:
            fail("RELOUS_EVIDENCE_KEY does not decrypt the stored numbers: "
                  "use the key they were stored with")
        records.append({
            "sender_number": sender_number, "sender_pseudonym": row["sender"],
            "received_at": iso(row["received_at"]),
            "provider_timestamp": iso(row["provider_timestamp"]), "text": row["text"],
            "verdict": row["verdict"], "reasons": row["reasons"],
            "flagged_at": iso(row["flagged_at"]), "flagged_for": row["flagged_for"],
        })
    with _private_file(out) as handle:
        if out.endswith(".json"):
            json.dump({"campaign": number, "since": since.date().isoformat(),
                       "messages": records}, handle, ensure_ascii=False, indent=2)
        else:
            writer = csv.DictWriter(handle, fieldnames=EVIDENCE_FIELDS)
            writer.writeheader()
            writer.writerows(records)
    senders = len({record["sender_pseudonym"] for record in records})
    click.echo(f"wrote {len(records)} message(s) of {senders} sender(s) flagged abusive "
               f"to {out}")


@contextmanager
def _private_file(path: str) -> Iterator[TextIO]:
    """Write `path` as a new 0600 file: the export holds raw numbers. A fresh file (in the
    same folder, then renamed over `path`) is never readable by others, not even for a
    moment, nor through a handle opened on an older, wider file of that name."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".relous-evidence-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            yield handle
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


EVIDENCE_FIELDS = ["sender_number", "sender_pseudonym", "received_at", "provider_timestamp",
                   "text", "verdict", "reasons", "flagged_at", "flagged_for"]


@click.command("purge")
def purge_command() -> None:
    """Apply retention now (beat also runs it daily)."""

    settings = load_settings()
    with open_database().transaction() as tx:
        purged = housekeeping.purge(tx, settings, datetime.now(UTC))  # beat's own use case
    click.echo(f"purged: {purged['texts']} text(s), {purged['numbers']} number(s), "
               f"{purged['evidence']} evidence record(s), {purged['partitions_dropped']} "
               f"month partition(s) dropped, {purged['dedup_keys']} dedup key(s), "
               f"{purged['parked_expired']} parked message(s) past the retention")
