"""db upgrade and keys: setting a deployment up."""

from __future__ import annotations

import secrets

import click

from shared.store.db import upgrade
from workers.cli.common import open_database


@click.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations not yet applied (the Procfile's `release` step)."""
    applied = upgrade(open_database(migrated=False))
    names = ": " + ", ".join(applied) if applied else ""
    click.echo(f"applied {len(applied)} migration(s){names}")


@click.command()
def keys() -> None:
    """Print fresh values for RELOUS_SECRET_KEY and RELOUS_EVIDENCE_KEY."""
    from cryptography.fernet import Fernet

    click.echo(f"RELOUS_SECRET_KEY={secrets.token_urlsafe(32)}")
    click.echo(f"RELOUS_EVIDENCE_KEY={Fernet.generate_key().decode()}")
