"""Reply texts and what they cost."""

from __future__ import annotations

import click

from shared.rules.templates import check_template, describe
from shared.store.campaigns import find_campaign
from workers.cli.common import fail, money, open_database, parse_money, parse_number


@click.group()
def template() -> None:
    """Reply texts and what they cost."""


@template.command("check")
@click.argument("text")
@click.option("--price-per-segment", default="0.08", show_default=True,
              help="EUR per segment (or --campaign for its price).")
@click.option("--campaign", "campaign_number", help="Use this campaign's price.")
def template_check(text: str, price_per_segment: str, campaign_number: str | None) -> None:
    """Encoding, segments, cost and GSM-7 suggestions; exit 1 above one segment."""
    price = parse_money(price_per_segment, "--price-per-segment")
    if campaign_number:
        with open_database().transaction() as tx:
            found = find_campaign(tx, parse_number(campaign_number))
        if found is None:
            fail(f"no campaign answers on {campaign_number}: see `relous campaign list`")
        price = found.price_per_segment
    report = check_template(text, price)
    for line in describe(report):
        click.echo(line)
    if not report.fits_one_segment:
        fail(f"{report.encoding.segments} segments: every reply would cost "
             f"{money(report.cost, 4)} EUR")
