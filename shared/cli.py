"""The `relous` command line (CONTRACT.md, "CLI").

Exit codes: 0 success, 1 a check failed, 2 bad usage. Errors go to stderr in one line that
says what to do. Raw phone numbers are never printed.
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

import click

from shared import store
from shared.db import Database, ensure_sqlite_folder, upgrade
from shared.phones import is_phone_number, mask, pseudonym
from shared.segments import Encoding
from shared.settings import ConfigError, Settings
from shared.templates import check_template, describe


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _settings(require_keys: bool = False) -> Settings:
    try:
        return Settings.from_env(require_keys=require_keys)
    except ConfigError as error:
        _fail(str(error), 2)
        raise  # unreachable: _fail exits


def _database() -> Database:
    settings = _settings()
    ensure_sqlite_folder(settings.database_url)
    return Database(settings.database_url, pool_size=1)


def _money(value: str, option: str) -> Decimal:
    try:
        amount = Decimal(value)
        if amount < 0 or not amount.is_finite():
            raise InvalidOperation
    except InvalidOperation:
        _fail(f"{option} must be a non-negative amount in EUR, e.g. 0.08", 2)
    return amount


def _checked_reply(text: str, price: Decimal, allow_multipart: bool) -> Encoding:
    """The template check every reply text passes (creation and change alike)."""
    if not text.strip():
        _fail("--reply must not be empty", 2)
    report = check_template(text, price)
    if not report.fits_one_segment and not allow_multipart:
        for line in describe(report):
            click.echo(line, err=True)
        _fail(f"the reply needs {report.encoding.segments} segments "
              f"({report.encoding.name}); shorten it, use the suggestion, or pass "
              f"--allow-multipart to pay for them")
    return report.encoding


def _number(value: str) -> str:
    if not is_phone_number(value):
        _fail(f"{value!r} is not a number: give E.164 digits without '+', e.g. 33612345678", 2)
    return value


@click.group()
def main() -> None:
    """anti-relous: a fake phone number that answers once, cheaply, and survives floods."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations not yet applied (the Procfile's `release` step)."""
    applied = upgrade(_database())
    names = ": " + ", ".join(applied) if applied else ""
    click.echo(f"applied {len(applied)} migration(s){names}")


@main.command()
def keys() -> None:
    """Print fresh values for RELOUS_SECRET_KEY and RELOUS_EVIDENCE_KEY."""
    from cryptography.fernet import Fernet

    click.echo(f"RELOUS_SECRET_KEY={secrets.token_urlsafe(32)}")
    click.echo(f"RELOUS_EVIDENCE_KEY={Fernet.generate_key().decode()}")


@main.group()
def campaign() -> None:
    """Campaigns: one inbound number each."""


@campaign.command("add")
@click.argument("number")
@click.option("--reply", "reply_text", required=True, help="The reply's text.")
@click.option("--delay", type=click.IntRange(min=0), default=3600, show_default=True,
              help="Seconds before the reply is sent.")
@click.option("--window", type=click.IntRange(min=1), default=30 * 86400, show_default=True,
              help="Seconds during which a sender gets no second reply.")
@click.option("--price-per-segment", default="0.08", show_default=True,
              help="Expected EUR per SMS segment (budget estimates).")
@click.option("--allow-multipart", is_flag=True, help="Accept a reply longer than one segment.")
def campaign_add(number: str, reply_text: str, delay: int, window: int,
                 price_per_segment: str, allow_multipart: bool) -> None:
    """Create the campaign answering on NUMBER (E.164 digits, no '+')."""
    number = _number(number)
    price = _money(price_per_segment, "--price-per-segment")
    encoding = _checked_reply(reply_text, price, allow_multipart)
    with _database().transaction() as tx:
        created = store.add_campaign(
            tx, number, reply_text, delay_seconds=delay, window_seconds=window,
            price_per_segment=price, allow_multipart=allow_multipart, now=datetime.now(UTC),
        )
    if not created:
        _fail(f"a campaign already answers on {number}")
    click.echo(f"campaign {number} added: {encoding.segments} segment(s), {encoding.name}, "
               f"reply after {delay}s, one reply per sender every {window}s")


@campaign.command("list")
def campaign_list() -> None:
    """List campaigns."""
    with _database().transaction() as tx:
        campaigns = store.list_campaigns(tx)
    if not campaigns:
        click.echo("no campaign yet: relous campaign add NUMBER --reply TEXT")
        return
    click.echo(f"{'number':<16} {'state':<7} {'delay':>7} {'window':>9} {'EUR/seg':>8}  reply")
    for item in campaigns:
        state = "paused" if item.paused else "active"
        click.echo(f"{item.number:<16} {state:<7} {item.reply_delay_seconds:>6}s "
                   f"{item.reply_window_seconds:>8}s {item.price_per_segment:>8}  "
                   f"{item.reply_text[:60]}")


def _set_paused(number: str, paused: bool) -> None:
    with _database().transaction() as tx:
        found = store.set_campaign_paused(tx, _number(number), paused)
    if not found:
        _fail(f"no campaign answers on {number}: see `relous campaign list`")
    click.echo(f"campaign {number} {'paused' if paused else 'resumed'}")


@campaign.command("pause")
@click.argument("number")
def campaign_pause(number: str) -> None:
    """Stop sending replies; inbound is still recorded and replies wait."""
    _set_paused(number, True)


@campaign.command("resume")
@click.argument("number")
def campaign_resume(number: str) -> None:
    """Send waiting replies again."""
    _set_paused(number, False)


@campaign.command("set")
@click.argument("number")
@click.argument("rules", nargs=-1)
@click.option("--reply", "reply_text", help="A new reply text (checked like at creation).")
@click.option("--delay", type=click.IntRange(min=0), help="Seconds before the reply is sent.")
@click.option("--window", type=click.IntRange(min=1), help="Seconds between two replies.")
@click.option("--price-per-segment", help="Expected EUR per SMS segment.")
@click.option("--allow-multipart", is_flag=True, help="Accept a reply over one segment.")
def campaign_set(number: str, rules: tuple[str, ...], reply_text: str | None,
                 delay: int | None, window: int | None, price_per_segment: str | None,
                 allow_multipart: bool) -> None:
    """Change a campaign: options, and abuse-rule knobs as RULE=VALUE (see README)."""
    number = _number(number)
    changes = {}
    for item in rules:
        key, sep, value = item.partition("=")
        if not sep:
            _fail(f"{item!r}: give rules as KEY=VALUE, e.g. sender_per_minute=5", 2)
        changes[key] = value
    with _database().transaction() as tx:
        current = store.find_campaign(tx, number)
        if current is None:
            _fail(f"no campaign answers on {number}: see `relous campaign list`")
        try:
            new_rules = current.rules.with_changes(changes)
        except ValueError as error:
            _fail(str(error), 2)
        price = (_money(price_per_segment, "--price-per-segment")
                 if price_per_segment is not None else current.price_per_segment)
        if reply_text is not None or price_per_segment is not None:
            _checked_reply(reply_text if reply_text is not None else current.reply_text,
                           price, allow_multipart or current.allow_multipart)
        store.update_campaign(
            tx, current.id, reply_text=reply_text, delay_seconds=delay, window_seconds=window,
            price_per_segment=price, allow_multipart=allow_multipart or current.allow_multipart,
            rules=new_rules,
        )
    click.echo(f"campaign {number} updated")


@main.group()
def template() -> None:
    """Reply texts and what they cost."""


@template.command("check")
@click.argument("text")
@click.option("--price-per-segment", default="0.08", show_default=True,
              help="EUR per segment (or --campaign for its price).")
@click.option("--campaign", "campaign_number", help="Use this campaign's price.")
def template_check(text: str, price_per_segment: str, campaign_number: str | None) -> None:
    """Encoding, segments, cost and GSM-7 suggestions; exit 1 above one segment."""
    price = _money(price_per_segment, "--price-per-segment")
    if campaign_number:
        with _database().transaction() as tx:
            found = store.find_campaign(tx, _number(campaign_number))
        if found is None:
            _fail(f"no campaign answers on {campaign_number}: see `relous campaign list`")
        price = found.price_per_segment
    report = check_template(text, price)
    for line in describe(report):
        click.echo(line)
    if not report.fits_one_segment:
        _fail(f"{report.encoding.segments} segments: every reply would cost {report.cost} EUR")


@main.group()
def budget() -> None:
    """Spending caps per campaign."""


@budget.command("set")
@click.argument("number")
@click.option("--hourly", help="EUR per hour ('none' removes the cap).")
@click.option("--daily", help="EUR per day ('none' removes the cap).")
@click.option("--total", help="EUR in total ('none' removes the cap).")
def budget_set(number: str, hourly: str | None, daily: str | None, total: str | None) -> None:
    """Set a campaign's caps; replies that do not fit wait, then expire."""
    number = _number(number)
    caps = {period: None if value.lower() == "none" else _money(value, f"--{period}")
            for period, value in (("hourly", hourly), ("daily", daily), ("total", total))
            if value is not None}
    if not caps:
        _fail("give at least one of --hourly, --daily, --total", 2)
    with _database().transaction() as tx:
        found = store.set_budget(tx, number, datetime.now(UTC), **caps)
    if not found:
        _fail(f"no campaign answers on {number}: see `relous campaign list`")
    shown = ", ".join(f"{period} {'none' if cap is None else f'{cap} EUR'}"
                      for period, cap in caps.items())
    click.echo(f"budget of {number}: {shown}")


@main.group()
def sender() -> None:
    """Operators' block and allow lists (stored as pseudonyms)."""


def _list_sender(number: str, action: str) -> None:
    settings = _settings(require_keys=True)
    who = pseudonym(_number(number), settings.secret_key)
    with _database().transaction() as tx:
        changed = store.set_sender_list(tx, who, action, datetime.now(UTC))
    label = mask(number)
    if not changed:
        _fail(f"{label} was not on that list")
    click.echo(f"{label}: {action}ed" if action != "block" else f"{label}: blocked")


@sender.command("block")
@click.argument("number")
def sender_block(number: str) -> None:
    """Never answer NUMBER again, in any campaign."""
    _list_sender(number, "block")


@sender.command("unblock")
@click.argument("number")
def sender_unblock(number: str) -> None:
    """Lift an operator's or an automatic block of NUMBER."""
    _list_sender(number, "unblock")


@sender.command("allow")
@click.argument("number")
def sender_allow(number: str) -> None:
    """Let NUMBER past every abuse rule (not the budget, nor one reply per window)."""
    _list_sender(number, "allow")


@sender.command("disallow")
@click.argument("number")
def sender_disallow(number: str) -> None:
    """Take NUMBER off the allowlist."""
    _list_sender(number, "disallow")


@main.command()
def status() -> None:
    """Per-campaign overview: mode, spend against caps, replies, top reasons, queues."""
    now = datetime.now(UTC)
    with _database().transaction() as tx:
        overview = store.campaign_overview(tx, now)
    if not overview:
        click.echo("no campaign yet: relous campaign add NUMBER --reply TEXT")
        return
    header = (f"{'campaign':<14} {'state':<7} {'mode':<6} {'in 1h':>6} {'pending':>7} "
              f"{'sent':>6} {'failed':>6} {'expired':>7}  {'spent today':>11}  caps left")
    click.echo(header)
    for item in overview:
        replies = item["replies"]
        used_day = item["budget"]["day"][0]
        left = ", ".join(
            f"{period} {cap - used:.2f}/{cap:.2f}"
            for period, (used, cap) in item["budget"].items() if cap is not None) or "no cap"
        click.echo(
            f"{item['number']:<14} {'paused' if item['paused'] else 'active':<7} "
            f"{'STORM' if item['storm_mode'] else 'normal':<6} "
            f"{sum(item['inbound'].values()):>6} {replies.get('pending', 0):>7} "
            f"{replies.get('sent', 0) + replies.get('delivered', 0):>6} "
            f"{replies.get('failed', 0):>6} {replies.get('expired', 0):>7}  "
            f"{used_day:>11.4f}  {left}")
    for item in overview:
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(item["inbound"].items()))
        reasons = ", ".join(f"{kind} {n}" for kind, n in item["top_reasons"]) or "none"
        click.echo(f"{item['number']}: last hour {verdicts or 'no inbound'}; "
                   f"top suppression reasons (24 h): {reasons}")
    click.echo(f"queues: {_queue_depths()}")


def _queue_depths() -> str:
    from ingest.publisher import CeleryPublisher
    from workers.app import create_celery

    try:
        depths = CeleryPublisher(create_celery(_settings())).queue_depths()
    except Exception as error:  # status still shows the rest
        return f"unavailable ({type(error).__name__})"
    return ", ".join(f"{name} {count} ready" for name, count in depths.items())


@main.group()
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

    from cryptography.fernet import Fernet, InvalidToken

    settings = _settings(require_keys=True)
    with _database().transaction() as tx:
        found = store.find_campaign(tx, _number(number))
        if found is None:
            _fail(f"no campaign answers on {number}: see `relous campaign list`")
        rows = store.evidence_messages(tx, found.id, since.replace(tzinfo=UTC))
    fernet = Fernet(settings.evidence_key)
    records = []
    for row in rows:
        try:
            sender_number = fernet.decrypt(row["encrypted_number"].encode()).decode()
        except InvalidToken:
            _fail("RELOUS_EVIDENCE_KEY does not decrypt the stored numbers: "
                  "use the key they were stored with")
        records.append({
            "sender_number": sender_number, "sender_pseudonym": row["sender"],
            "received_at": _iso(row["received_at"]),
            "provider_timestamp": _iso(row["provider_timestamp"]), "text": row["text"],
            "verdict": row["verdict"], "reasons": row["reasons"],
            "flagged_at": _iso(row["flagged_at"]), "flagged_for": row["flagged_for"],
        })
    with open(out, "w", newline="", encoding="utf-8") as handle:
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


EVIDENCE_FIELDS = ["sender_number", "sender_pseudonym", "received_at", "provider_timestamp",
                   "text", "verdict", "reasons", "flagged_at", "flagged_for"]


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


@main.command("purge")
def purge_command() -> None:
    """Apply retention now (beat also runs it daily)."""
    from datetime import timedelta

    settings = _settings()
    with _database().transaction() as tx:
        purged = store.purge(tx, datetime.now(UTC), timedelta(days=settings.retention_days),
                             timedelta(days=settings.evidence_retention_days))
    click.echo(f"purged: {purged['texts']} text(s), {purged['numbers']} number(s), "
               f"{purged['evidence']} evidence record(s)")


@main.command()
@click.argument("scenario")
@click.option("--target", required=True, help="Base URL of the service, e.g. http://127.0.0.1:8000")
@click.option("--to", "campaign_number", default="33700000001", show_default=True,
              help="The campaign number the scenario texts.")
@click.option("--speed", type=click.FloatRange(min=0.001), default=600.0, show_default=True,
              help="Time compression: scenario seconds per real second.")
@click.option("--seed", type=int, default=2017, show_default=True)
@click.option("--provider-log", help="The fake Vonage's log URL (https://HOST/_fake/sent) "
                                     "to count replies; none: no reply figures.")
@click.option("--settle", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Seconds without a new reply before the report is made.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True)
@click.option("--chart", "chart_path", help="PNG to write (default storm-SCENARIO.png).")
def storm(scenario: str, target: str, campaign_number: str, speed: float, seed: int,
          provider_log: str | None, settle: float, concurrency: int,
          chart_path: str | None) -> None:
    """Replay SCENARIO's webhooks against a running service and report what it cost.

    Webhooks are signed with VONAGE_SIGNATURE_SECRET when it is set.
    """
    import os

    from shared import storm as storm_runner
    from shared.scenarios import load_scenario, scenario_names, timeline

    try:
        spec = load_scenario(scenario)
    except KeyError:
        _fail(f"unknown scenario {scenario!r}; known: {', '.join(scenario_names())}", 2)
    webhooks = timeline(spec, _number(campaign_number), seed)
    click.echo(f"{scenario}: {len(webhooks)} webhooks over {spec['duration_hours']} h, "
               f"replayed at x{speed:g} (about {spec['duration_hours'] * 3600 / speed:.0f} s)")
    result = storm_runner.run_storm(
        webhooks, target, speed, secret=os.environ.get("VONAGE_SIGNATURE_SECRET") or None,
        method=os.environ.get("VONAGE_SIGNATURE_METHOD", "sha256").lower(),
        concurrency=concurrency)
    if provider_log:
        storm_runner.collect_replies(result, provider_log, settle,
                                     verify=os.environ.get("REQUESTS_CA_BUNDLE") or True)
    storm_runner.read_caps(result, target, campaign_number, os.environ.get("METRICS_TOKEN"))
    rows, lines = storm_runner.summary(result)
    click.echo(storm_runner.format_table(rows))
    for line in lines:
        click.echo(line)
    path = chart_path or f"storm-{scenario}.png"
    try:
        storm_runner.chart(result, path, f"relous storm {scenario} (x{speed:g})")
    except ImportError:
        click.echo("no chart: matplotlib is missing (pip install -e '.[dev]')", err=True)
    else:
        click.echo(f"chart: {path}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Default: $PORT, else 8000.")
@click.option("--data-dir", default=".relous", show_default=True,
              help="Folder of the demo's database and embedded broker.")
def demo(host: str, port: int | None, data_dir: str) -> None:
    """Run the whole service on the embedded default: no RabbitMQ, PostgreSQL or Vonage."""
    from workers.demo import run_demo

    run_demo(host=host, port=port or int(os.environ.get("PORT") or 8000), data_dir=data_dir)


if __name__ == "__main__":
    main()
