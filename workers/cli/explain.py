"""`relous explain NUMBER|--message ID`: one sender's decision trail, pseudonymised.

When a person says "I got no reply", the operator finds out why in one command: each
message's verdict and reasons (with their thresholds), each reply and its status, the
sender's state per campaign, and one plain-language conclusion per campaign. A sender is
shown by the short form of its pseudonym and a masked number; message texts only by their
length (a text may hold phone numbers).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import click

from shared.rules.phones import is_phone_number, mask, pseudonym
from shared.settings import ConfigError, Settings
from shared.store.campaigns import global_halt
from shared.store.trail import (
    Trail,
    held_number,
    message_by_id,
    sender_of_message,
    sender_trail,
)
from workers.cli.common import USAGE, fail, money, open_database

# Enough of the pseudonym to find the sender in other output; the full key stays unprinted.
SHORT_PSEUDONYM = 12
# Reasons written by the rules (shared/rules/abuse.py, replies.py) that the conclusion reads.
ALREADY_ANSWERED = "already answered in this reply window"
FOLLOW_UPS = ("sender blocked for abuse", "blocklisted sender")
ANSWERED = ("sent", "delivered")
# Beat flushes due replies every few seconds: one still pending this long after its due
# time says the flush is not running (or sending is held for a reason shown instead).
OVERDUE = timedelta(minutes=5)


@click.command()
@click.argument("number", required=False)
@click.option("--message", "message_id", type=int, help="An inbound message's id.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show the sender's latest messages, up to this many.")
def explain(number: str | None, message_id: int | None, limit: int) -> None:
    """A sender's decision trail, pseudonymised: why it was (not) answered."""
    if (number is None) == (message_id is None):
        fail("give a sender's NUMBER or --message ID (one of them, not both)", USAGE)
    now, who, masked = datetime.now(UTC), "", ""
    if number is not None:
        digits = _digits(number)
        who, masked = pseudonym(digits, _secret_key()), mask(digits)
    with open_database().transaction() as tx:
        if message_id is not None:
            found = sender_of_message(tx, message_id or 0)
            if found is None:
                fail(f"no inbound message {message_id}: check the id (`relous explain "
                     "NUMBER` lists a sender's messages with theirs)")
            who, held = found, held_number(tx, found)
            masked = mask(held) if held else "not kept (only an unsent reply holds it)"
        trail = sender_trail(tx, who, limit)
        asked = message_by_id(tx, message_id) if message_id is not None else None
        everywhere = global_halt(tx)
    if not trail.known:
        fail(f"no message from {masked} on record: check the number (E.164, country code "
             "first) and that RELOUS_SECRET_KEY is the key the workers use")
    click.echo(f"sender {who[:SHORT_PSEUDONYM]} (pseudonym), number {masked}; operators' "
               f"lists: {trail.listed + 'list' if trail.listed else 'none'}")
    shown = len(trail.messages)
    left_out = trail.total_messages - shown
    click.echo(f"messages: {trail.total_messages}, all shown" if not left_out else
               f"messages: the latest {shown} of {trail.total_messages} shown, {left_out} "
               f"older left out (--limit {trail.total_messages} shows them all)")
    if asked is not None and all(row["id"] != message_id for row in trail.messages):
        click.echo(f"message {message_id}, older than the ones shown:")
        _echo_message(asked, trail, message_id)
    groups = _groups(trail)
    if not groups:
        click.echo("no message on record; the operators' list applies to every campaign")
    for group in groups:
        click.echo("")
        _echo_group(group, trail, message_id, everywhere, now)


def _digits(number: str) -> str:
    """E.164 digits, a leading '+' allowed; the number is not echoed back on error."""
    digits = number.strip().removeprefix("+")
    if not is_phone_number(digits):
        fail("NUMBER must be the sender's E.164 number, country code first, e.g. "
             "33612345678 or +33612345678", USAGE)
    return digits


def _secret_key() -> str:
    """RELOUS_SECRET_KEY, which keys the pseudonyms (the evidence key is not needed)."""
    try:
        return Settings.from_env(require_keys=True, require_evidence_key=False).secret_key
    except ConfigError as error:
        fail(str(error), USAGE)


def _groups(trail: Trail) -> list[dict[str, Any]]:
    """One group per campaign the sender wrote to (and per number no campaign answers
    on), its messages oldest first."""
    groups: dict[Any, dict[str, Any]] = {
        row["campaign_id"]: {"state": row, "number": row["number"], "messages": []}
        for row in trail.campaigns}
    for row in reversed(trail.messages):
        key = row["campaign_id"] if row["campaign_id"] is not None else ("none", row["campaign"])
        groups.setdefault(key, {"state": None, "number": row["campaign"], "messages": []})
        groups[key]["messages"].append(row)
    return list(groups.values())


def _echo_group(group: dict[str, Any], trail: Trail, asked: int | None,
                everywhere: str | None, now: datetime) -> None:
    state, messages = group["state"], group["messages"]
    if state is None:
        click.echo(f"number {group['number']}: no campaign answers on it")
    else:
        click.echo(f"campaign {group['number']}: {_campaign_state(state, everywhere)}")
        click.echo(f"  sender: {_sender_state(state, trail, now)}")
    if not messages:
        click.echo("  (no message among those shown)")
    for row in messages:
        _echo_message(row, trail, asked)
    replies = sorted((reply for reply in trail.replies.values()
                      if state is not None and reply["campaign_id"] == state["campaign_id"]),
                     key=lambda reply: (reply["created_at"], reply["id"]))
    click.echo(f"  => {_conclusion(state, messages, replies, everywhere, now)}")


def _echo_message(row: dict[str, Any], trail: Trail, asked: int | None) -> None:
    here = row["id"] == asked
    parts = f"{row['parts']} part" + ("s" if row["parts"] != 1 else "")
    click.echo(f"{'>' if here else ' '} #{row['id']:<7} {_at(row['received_at'])}  "
               f"{row['verdict']:<10} score {row['score']:>3}  {row['text_length']} chars, "
               f"{parts}{'   <- the message asked about' if here else ''}")
    click.echo(f"      reasons: {row['reasons'] or 'none recorded'}")
    if row["would_stop"]:
        rules = row["would_stop"].replace(",", ", ")
        click.echo(f"      would stop (rules in record mode): {rules}")
    reply = trail.replies.get(row["id"])
    if reply is not None:
        click.echo(f"      reply #{reply['id']} {reply['status']}: {_reply_details(reply)}")


def _reply_details(reply: dict[str, Any]) -> str:
    price = reply["final_price"] if reply["final_price"] is not None else reply["price"]
    details = [f"due {_at(reply['due_at'])}"]
    if reply["status"] in ("pending", "claimed", "sending") and reply["expires_at"]:
        details.append(f"expires {_at(reply['expires_at'])}")
    for shown, value in (("sent", reply["sent_at"] and _at(reply["sent_at"])),
                         ("segments", reply["segments"]),
                         ("price EUR", price is not None and _money(price)),
                         ("attempts", reply["attempts"]), ("error", reply["error"]),
                         ("error code", reply["err_code"])):
        if value:
            details.append(f"{shown} {value}")
    return ", ".join(details)


def _campaign_state(state: dict[str, Any], everywhere: str | None) -> str:
    flags = [f"sending stopped for every campaign ({everywhere})"] if everywhere else []
    if state["sending_halted_reason"]:
        flags.append(f"sending halted ({state['sending_halted_reason']})")
    if state["paused"]:
        flags.append("paused")
    return ", ".join(flags) or "active"


def _sender_state(state: dict[str, Any], trail: Trail, now: datetime) -> str:
    count = state["message_count"]
    facts = [f"first seen {_at(state['first_seen_at'])}, {count} message"
             + ("s" if count != 1 else "")]
    window, blocked = state["reply_window_ends_at"], state["blocked_until"]
    facts.append(f"reply window ends {_at(window)}" if window and window > now
                 else "no open reply window")
    facts.append(f"blocked until {_at(blocked)}" if blocked and blocked > now
                 else "not blocked")
    waiting = trail.waiting_parts.get(state["campaign_id"])
    if waiting:
        facts.append(f"{waiting} part(s) of a long SMS waiting for the rest")
    return "; ".join(facts)


def _conclusion(state: dict[str, Any] | None, messages: list[dict[str, Any]],
                replies: list[dict[str, Any]], everywhere: str | None,
                now: datetime) -> str:
    """Why this sender was, or was not, answered in this campaign, in one line."""
    latest = messages[-1] if messages else None
    if state is None:
        return "never answered: no campaign answers on this number"
    clauses = []
    if replies:
        answered = [reply for reply in replies if reply["status"] in ANSWERED]
        last = replies[-1]
        if answered and last["status"] not in ANSWERED:
            clauses.append(_answered(answered))
        clauses.append(_reply_clause(last, answered, state, everywhere, now))
        if latest is not None and latest["id"] != last["inbound_message_id"]:
            clauses.append("since then " + _why_not(latest, messages, state, now, "that"))
    elif latest is not None:
        clauses.append(_why_not(latest, messages, state, now, "an earlier"))
    elif not state["message_count"]:
        clauses.append("no whole message yet: a long SMS is judged once all its parts arrive")
    else:
        clauses.append("no message among those shown: raise --limit")
    return "; ".join(clauses)


def _answered(answered: list[dict[str, Any]]) -> str:
    last = answered[-1]
    times = "once" if len(answered) == 1 else f"{len(answered)} times, last"
    note = "delivered" if last["status"] == "delivered" else "sent, no delivery receipt yet"
    return f"answered {times} at {_at(last['sent_at'])} ({note})"


def _reply_clause(reply: dict[str, Any], answered: list[dict[str, Any]],
                  state: dict[str, Any], everywhere: str | None, now: datetime) -> str:
    status = reply["status"]
    if status in ANSWERED:
        return _answered(answered)
    if status == "unknown":
        return (f"reply may have gone out at {_at(reply['claimed_at'])} (the provider's "
                "answer was lost; never resent)")
    if status == "failed":
        code = f" (error code {reply['err_code']})" if reply["err_code"] else ""
        return (f"reply failed: {reply['error'] or 'no reason given'}{code}; "
                "the sender's next message may be answered")
    if status == "expired":
        return f"reply expired unsent: {_expiry_cause(reply, state)}"
    if status in ("claimed", "sending"):
        return f"reply being sent since {_at(reply['claimed_at'])}"
    held = (f"sending stopped for every campaign ({everywhere})" if everywhere
            else f"sending halted ({state['sending_halted_reason']})"
            if state["sending_halted_reason"] else "campaign paused" if state["paused"]
            else "waiting for budget" if "budget" in (reply["error"] or "")
            else "overdue: check that beat and a worker are running"
            if reply["due_at"] < now - OVERDUE else "")
    return (f"reply pending, due {_at(reply['due_at'])}{' (' + held + ')' if held else ''}"
            f", expires if still unsent at {_at(reply['expires_at'])}")


def _expiry_cause(reply: dict[str, Any], state: dict[str, Any]) -> str:
    """Why a reply expired unsent. The expiry overwrites the reply's error, so a wait for
    budget is also recognised by its due time, pushed past the campaign's delay before
    any claim (only the budget check does that: a provider retry counts an attempt)."""
    first_due = reply["created_at"] + timedelta(seconds=state["reply_delay_seconds"])
    if "budget" in (reply["error"] or "") or (
            not reply["attempts"] and reply["due_at"] > first_due + timedelta(seconds=1)):
        return "budget (it waited for room under the caps)"
    if reply["attempts"]:
        return (f"claimed {reply['attempts']} time(s), never handed to the provider "
                "(throttled, or sending stopped)")
    return ("never picked up in time (campaign paused, sending stopped, or no beat/worker "
            "running)")


def _why_not(message: dict[str, Any], messages: list[dict[str, Any]], state: dict[str, Any],
             now: datetime, which: str) -> str:
    """Why `message` (the latest) got no reply of its own; `which` names the reply whose
    window it fell in ("that": the one just told of)."""
    reasons = [reason for reason in (message["reasons"] or "").split("; ") if reason]
    first = reasons[0] if reasons else "no reason recorded"
    if first == "blocklisted sender":
        return "on the operators' blocklist (`relous sender unblock` lifts it)"
    if message["verdict"] == "block":
        until = state["blocked_until"]
        cause = next((row["reasons"].split("; ")[0] for row in reversed(messages)
                      if row["verdict"] == "block" and row["reasons"]
                      and not row["reasons"].startswith(FOLLOW_UPS)), first)
        when = (f"blocked until {_at(until)}" if until and until > now
                else f"was blocked until {_at(until)}" if until else "blocked")
        return f"{when}: {cause}"
    if first == ALREADY_ANSWERED:
        ends = state["reply_window_ends_at"]
        return (f"within the reply window of {which} reply"
                + (f" (ends {_at(ends)})" if ends else ""))
    if message["verdict"] == "suppress":
        return f"suppressed: {first}"
    if message["verdict"] == "reply":
        return "answered (the reply is no longer on record)"
    return f"{message['verdict']}: {first}"


def _at(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _money(value: Decimal | float | str) -> str:
    """A price as stored (up to 8 decimals, at least 4), never a negative zero."""
    return money(Decimal(str(value)), 4)

