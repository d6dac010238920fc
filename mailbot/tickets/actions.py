"""What an operator does from the CLI: change a ticket's status, assign it, answer it.

Each function is one store transaction and leaves the same events and outbox rows as
the matching command in an agent's mail.  Mails are only queued: the daemon's outbox
sender (or ``mailbot outbox flush``) delivers them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailbot.settings.config import AgentConfig
from mailbot.store import tickets as tq
from mailbot.tickets import agents, commands, filing, lifecycle
from mailbot.tickets.outcome import OperatorError

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context

OPERATOR = "operator"


def set_status(ctx: Context, number: str, status: str) -> bool:
    """Move ticket ``number`` to ``status``; False when it already had that status."""
    target = status.strip().lower()
    with ctx.store.transaction():
        ticket = _ticket(ctx, number)
        try:
            lifecycle.check_transition(ticket["status"], target)
        except lifecycle.TransitionError as exc:
            raise OperatorError(str(exc)) from exc
        return filing.change_status(ctx, ticket, target, ctx.clock(), actor=OPERATOR)


def assign(ctx: Context, number: str, address: str) -> bool:
    """Make the agent with ``address`` the owner of ticket ``number``; False when already."""
    agent = _agent(ctx, address)
    parsed = commands.Parsed((commands.Command("assign", agent.address),), "", ())
    with ctx.store.transaction():
        ticket = _ticket(ctx, number)
        before = ticket["owner"]
        agents.apply_commands(ctx, ticket, parsed, OPERATOR, ctx.clock())
        return ticket["owner"] != before


def reply(ctx: Context, number: str, text: str, address: str = "", note: bool = False) -> str:
    """Answer the customer of ticket ``number`` (or add an internal note): "answer" or "note".

    With ``address`` the answer is signed by that agent, else by the support team.
    """
    text = text.strip()
    if not text:
        raise OperatorError("the reply text is empty")
    agent = _agent(ctx, address) if address else None
    actor = agent.address if agent else OPERATOR
    now = ctx.clock()
    with ctx.store.transaction():
        ticket = _ticket(ctx, number)
        if note:
            tq.add_message(ctx.store, {"ticket_id": ticket["id"], "direction": "note",
                                       "from_addr": agent.address if agent else "",
                                       "subject": ticket["subject"], "body": text,
                                       "created_at": now})
            tq.add_event(ctx.store, ticket["id"], "note", {"by": actor}, now, actor=actor)
            return "note"
        if ticket["contact_id"] is None:
            raise OperatorError(f"ticket {number} has no contact to answer; use --note")
        name = (agent.name or agent.address) if agent else ctx.config.support.name
        agents.answer(ctx, ticket, agents.Reply(text, name, actor), now)
    return "answer"


def _ticket(ctx: Context, number: str) -> dict:
    ticket = tq.by_number(ctx.store, number)
    if ticket is None:
        raise OperatorError(f"no ticket {number}")
    return ticket


def _agent(ctx: Context, address: str) -> AgentConfig:
    agent = ctx.team.get(address.strip())
    if agent is None:
        known = ", ".join(ctx.team.addresses()) or "none (configure [[team.agents]])"
        raise OperatorError(f"{address} is not a configured agent; agents: {known}")
    return agent
