"""The bank transfer on Temporal, for the durable engines' comparison
(`bench-report engines`, `docs/benchmarks.md`): the peer of
`examples/bank-transfer` and of `benches/src/bin/restate-bank.rs`, its state
kept by Temporal.

One workflow per account (`account-{id}`), which holds that account's
balance and lives until it continues as new. A transfer is an Update of the
workflow of the account it debits, sent with update-with-start (the workflow
is started by its first transfer or deposit) and with the request's
idempotency key as the update's id, so that Temporal answers a repeated key
with the first answer and moves the money once. The update refuses an
overdraft, debits, and starts the deposit as an activity, which sends an
update-with-start of its own to the other account (its id derived from the
key, so that the activity's retries deposit once). As with Restate, the
deposit is durable once the debit's update completes, and lands after the
debit's answer. An account never written holds the benchmark's seed.

Temporal keeps an update's id, and answers it again, within a workflow
run. A run continues as new only when Temporal suggests it (thousands of
events, far beyond one account's share of the benchmark); a key repeated
across that boundary would move money again, which a production version
would prevent by carrying its recent keys into the new run.

Two processes, so that the worker and the gateway each have a core:

    python3 bank.py worker TEMPORAL_ADDRESS
    python3 bank.py gateway TEMPORAL_ADDRESS HTTP_PORT

The gateway serves on 127.0.0.1, as the bench's client speaks HTTP:

- `POST /Account/{id}/transfer` with `{"to": ..., "amount": ...}` and an
  `idempotency-key` header: `200` with `{"from_balance": ...}`, `409` for
  insufficient funds, `400` for a bad transfer;
- `POST /Account/{id}/balance`: `200` with the balance.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from temporalio.client import (
        Client,
        WithStartWorkflowOperation,
        WorkflowUpdateFailedError,
    )
    from temporalio.common import WorkflowIDConflictPolicy
    from temporalio.service import RPCError, RPCStatusCode

#: Every account's balance before the first transfer.
SEED = 1_000_000_000
#: The worker's task queue.
QUEUE = "bank"


def workflow_id(account: str) -> str:
    return f"account-{account}"


@dataclass
class Transfer:
    to: str
    amount: int


@dataclass
class Deposit:
    to: str
    amount: int
    key: str


@workflow.defn
class Account:
    # The state is set before any handler runs: a workflow started by an
    # update-with-start runs the update's handler before its `run`.
    @workflow.init
    def __init__(self, balance: int) -> None:
        self.balance = balance
        self.deposits: list[asyncio.Future] = []

    @workflow.run
    async def run(self, balance: int) -> None:
        # A long-lived workflow: it continues as new, with its balance, once
        # its history is long enough for Temporal to suggest it and nothing
        # it started is still running.
        await workflow.wait_condition(
            lambda: workflow.info().is_continue_as_new_suggested() and workflow.all_handlers_finished()
        )
        await asyncio.gather(*self.deposits)
        workflow.continue_as_new(self.balance)

    @workflow.update
    async def transfer(self, transfer: Transfer) -> dict:
        account = workflow.info().workflow_id.removeprefix("account-")
        if transfer.amount <= 0 or transfer.to == account:
            raise ApplicationError("a transfer moves a positive amount to another account", type="BadTransfer")
        if self.balance < transfer.amount:
            raise ApplicationError(f"insufficient funds in `{account}`", type="InsufficientFunds")
        self.balance -= transfer.amount
        update = workflow.current_update_info()
        assert update is not None, "a transfer is an update"
        self.deposits.append(
            workflow.start_activity(
                deposit,
                Deposit(transfer.to, transfer.amount, update.id),
                start_to_close_timeout=timedelta(seconds=30),
            )
        )
        return {"from_balance": self.balance}

    @workflow.update
    async def deposit(self, amount: int) -> int:
        self.balance += amount
        return self.balance

    @workflow.query
    def current(self) -> int:
        return self.balance


def start_operation(account: str) -> WithStartWorkflowOperation:
    return WithStartWorkflowOperation(
        Account.run,
        SEED,
        id=workflow_id(account),
        task_queue=QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


#: The worker's client, for the deposits' activity.
_client: Client | None = None


@activity.defn
async def deposit(deposit: Deposit) -> None:
    assert _client is not None, "the worker sets its client before it runs"
    await _client.execute_update_with_start_workflow(
        Account.deposit,
        deposit.amount,
        id=f"{deposit.key}/deposit",
        start_workflow_operation=start_operation(deposit.to),
    )


async def run_worker(address: str) -> None:
    from temporalio.worker import Worker

    global _client
    _client = await Client.connect(address)
    worker = Worker(_client, task_queue=QUEUE, workflows=[Account], activities=[deposit])
    await worker.run()


async def run_gateway(address: str, port: int) -> None:
    from aiohttp import web

    client = await Client.connect(address)

    async def transfer(request: web.Request) -> web.Response:
        key = request.headers.get("idempotency-key")
        if not key:
            return web.json_response({"error": "an idempotency-key header is needed"}, status=400)
        try:
            body = await request.json()
            order = Transfer(to=str(body["to"]), amount=int(body["amount"]))
        except (ValueError, KeyError, TypeError) as error:
            return web.json_response({"error": f"a transfer is {{to, amount}}: {error}"}, status=400)
        try:
            answer = await client.execute_update_with_start_workflow(
                Account.transfer,
                order,
                id=key,
                start_workflow_operation=start_operation(request.match_info["account"]),
            )
        except WorkflowUpdateFailedError as error:
            cause = error.cause
            kind = cause.type if isinstance(cause, ApplicationError) else None
            status = 409 if kind == "InsufficientFunds" else 400 if kind == "BadTransfer" else 500
            return web.json_response({"error": str(cause)}, status=status)
        return web.json_response(answer)

    async def balance(request: web.Request) -> web.Response:
        handle = client.get_workflow_handle(workflow_id(request.match_info["account"]))
        try:
            value = await handle.query(Account.current)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            value = SEED
        return web.json_response(value)

    app = web.Application()
    app.add_routes(
        [
            web.post("/Account/{account}/transfer", transfer),
            web.post("/Account/{account}/balance", balance),
        ]
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    await asyncio.Event().wait()


def main(argv: list[str]) -> None:
    match argv:
        case ["worker", address]:
            asyncio.run(run_worker(address))
        case ["gateway", address, port]:
            asyncio.run(run_gateway(address, int(port)))
        case _:
            sys.exit("usage: bank.py worker TEMPORAL_ADDRESS | bank.py gateway TEMPORAL_ADDRESS HTTP_PORT")


if __name__ == "__main__":
    main(sys.argv[1:])
