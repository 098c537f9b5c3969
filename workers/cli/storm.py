"""`relous storm`: replay a scenario against a running service."""

from __future__ import annotations

import os

import click

from workers.cli.common import fail, parse_number


@click.command()
@click.argument("scenario")
@click.option("--target", required=True, help="Base URL of the service, e.g. http://127.0.0.1:8000")
@click.option("--to", "campaign_number", default="33700000001", show_default=True,
              help="The campaign number the scenario texts.")
@click.option("--speed", type=click.FloatRange(min=0.001), default=600.0, show_default=True,
              help="Time compression: scenario seconds per real second.")
@click.option("--seed", type=int, default=2017, show_default=True)
@click.option("--provider-log", help="The fake Vonage's log URL (https://HOST/_fake/sent) "
                                     "to count replies per sender; without it, the "
                                     "service's own totals from its /metrics.")
@click.option("--settle", type=click.FloatRange(min=0), default=20.0, show_default=True,
              help="Seconds without a new reply (or, without --provider-log, without a "
                   "change in the service's /metrics) before the report is made.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True)
@click.option("--chart", "chart_path", help="PNG to write (default storm-SCENARIO.png).")
def storm(scenario: str, target: str, campaign_number: str, speed: float, seed: int,
          provider_log: str | None, settle: float, concurrency: int,
          chart_path: str | None) -> None:
    """Replay SCENARIO's webhooks against a running service and report what it cost.

    Webhooks are signed with VONAGE_SIGNATURE_SECRET when it is set.
    """

    from workers.replay import runner as storm_runner
    from workers.replay.report import format_table, summary, write_chart
    from workers.replay.scenarios import load_scenario, scenario_names, timeline

    try:
        spec = load_scenario(scenario)
    except KeyError:
        fail(f"unknown scenario {scenario!r}; known: {', '.join(scenario_names())}", 2)
    webhooks = timeline(spec, parse_number(campaign_number), seed)
    token = os.environ.get("METRICS_TOKEN")
    before = storm_runner.read_metrics(target, campaign_number, token)
    click.echo(f"{scenario}: {len(webhooks)} webhooks over {spec['duration_hours']} h, "
               f"replayed at x{speed:g} (about {spec['duration_hours'] * 3600 / speed:.0f} s)")
    result = storm_runner.run_storm(
        webhooks, target, speed, secret=os.environ.get("VONAGE_SIGNATURE_SECRET") or None,
        method=os.environ.get("VONAGE_SIGNATURE_METHOD", "sha256").lower(),
        concurrency=concurrency)
    if provider_log:
        storm_runner.collect_replies(result, provider_log, settle,
                                     verify=os.environ.get("REQUESTS_CA_BUNDLE") or True)
    else:
        storm_runner.wait_for_quiet(target, campaign_number, token, settle)
    storm_runner.read_caps(result, target, campaign_number, token,
                           before=before[1] if before else None)
    rows, lines = summary(result)
    click.echo(format_table(rows))
    for line in lines:
        click.echo(line)
    click.echo(write_chart(result, chart_path or f"storm-{scenario}.png",
                           f"relous storm {scenario} (x{speed:g})"))
