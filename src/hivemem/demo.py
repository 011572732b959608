"""A short scripted multi-agent scenario that shows HiveMem working.

Three agents of one swarm share what they learn: a researcher stores facts
and an entity, a coder records what worked and what failed, a reviewer adds a
rule. A new agent then recalls what the swarm knows before starting a similar
task, and the scores show why each memory ranked where it did. Last, a
support conversation runs in a working-memory buffer from the example
resources file: secrets are redacted before they are stored, and a prompt is
packed from the conversation and the swarm's memories within a token budget.
"""

from __future__ import annotations

import importlib.resources
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

import hivemem
from hivemem.config import HiveConfig

SWARM = "demo-swarm"


def run_demo(config: HiveConfig, console: Console, *, explicit_db: bool) -> None:
    """Run the scenario.

    Args:
        config: Where to write; without ``explicit_db`` a temporary file is used
            so the demo never touches a real database.
        console: Where to print.
        explicit_db: Whether the user named a database.
    """
    with tempfile.TemporaryDirectory(prefix="hivemem-demo-") as tmp:
        url = config.url if explicit_db else str(Path(tmp) / "demo.db")
        started = time.perf_counter()
        with hivemem.open(url, config=config) as hive:
            console.rule(f"HiveMem demo on {url} (embedder: {hive.embedder.name if hive.embedder else 'none'})")
            researcher, coder, reviewer = (f"{SWARM}/{name}" for name in ("researcher", "coder", "reviewer"))

            hive.remember(
                researcher,
                "The payments API rate-limits clients to 100 requests per minute.",
                kind="fact",
                tier="long",
                tags=["payments", "api"],
                importance=0.8,
                agent_id="researcher",
            )
            hive.remember(
                researcher,
                "Invoices are stored in the billing database, table invoices_v2.",
                kind="fact",
                tier="long",
                tags=["billing"],
                agent_id="researcher",
            )
            hive.upsert_entity(SWARM, "service", "payments-api", {"owner": "team-pay", "sla": "99.9%"})
            hive.upsert_entity(SWARM, "service", "Payments-API", {"region": "eu-west-1"})

            hive.remember_episode(
                coder,
                context="Bulk-sync 5,000 invoices to the payments API",
                action="sent all requests at once in parallel",
                outcome="HTTP 429 after 100 requests",
                success=False,
                lesson="respect the 100/min rate limit",
                tools=["http"],
                agent_id="coder",
            )
            hive.remember_episode(
                coder,
                context="Bulk-sync invoices to the payments API",
                action="batched requests with a token bucket at 90/min and retries with backoff",
                outcome="all invoices synced in 56 minutes",
                success=True,
                lesson="throttle below the limit and retry 429s with backoff",
                tools=["http", "token-bucket"],
                metrics={"minutes": 56},
                agent_id="coder",
            )
            hive.add_rule(
                reviewer,
                "Every client of an external API must throttle and retry with backoff.",
                rule_type="guideline",
                confidence=0.9,
                agent_id="reviewer",
            )

            console.print(f"stored {hive.stats(SWARM)['memories']} memories from 3 agents\n")
            task = "sync refunds to the payments API without hitting the rate limit"
            console.print(f"[bold]A new agent asks:[/bold] {task!r}")
            table = Table("score", "kind", "from", "memory", "relevance", "outcome")
            for hit in hive.recall(task, namespace=SWARM, k=5):
                m = hit.memory
                table.add_row(
                    f"{hit.score:.3f}",
                    m.kind,
                    m.namespace.removeprefix(SWARM + "/"),
                    " ".join(m.content.split())[:70],
                    f"{hit.scores['relevance']:.2f}",
                    f"{hit.scores['outcome']:.1f}",
                )
            console.print(table)

            lessons = hive.recall(task, namespace=SWARM, kinds="episode", where={"success": True}, k=1)
            if lessons:
                console.print(f"[bold]Lesson to apply:[/bold] {lessons[0].memory.data['lesson']}")
            entity = hive.get_by_key(SWARM, "entity:service:payments-api")
            console.print(
                f"[bold]Entity:[/bold] {entity.data['name']} {entity.data['properties']} "
                f"(seen {entity.data['interactions']} times)"
            )
            _working_memory(hive, console, task)
        console.print(f"\ndemo finished in {time.perf_counter() - started:.2f} s")


def _working_memory(hive: hivemem.Hive, console: Console, task: str) -> None:
    """A support chat in a buffer of the shipped example resources file, then a packed prompt."""
    hive.load_resources(str(importlib.resources.files("hivemem") / "data" / "resources.yaml"))
    chat = hive.working("support", user_id="u-42")
    chat.append("user", "Refunds for account ACCT-12345678 keep failing; mail me at ann@example.com.")
    chat.append("assistant", "The payments API returned 429: the sync sends too many requests per minute.")
    stats = chat.append("user", "How should the refund sync call it then?")
    console.print(f"\n[bold]Working memory[/bold] {chat.key}: {stats.messages} messages, {stats.tokens} tokens")
    for message in chat.messages():
        console.print(f"  {message.role}: {message.content}")
    packed = hive.pack(task, token_budget=120, working=chat.key, namespace=SWARM, k=3)
    left = ", ".join(f"{item.source} {item.ref[:8]} ({item.reason})" for item in packed.left_out) or "nothing"
    console.print(f"[bold]Packed prompt[/bold] ({packed.tokens}/{packed.budget} tokens; left out: {left}):")
    console.print(packed.text)
